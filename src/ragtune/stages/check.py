"""check: every section of params.yaml (unknown sections refused) and the files and environment variables it
names, before the first stage does any work; writes the constant marker data/check/params.ok, which fetch
depends on, so that a valid change of params reruns nothing downstream by itself."""

from ragtune.checks import check_params_file
from ragtune.stage import run_main, stage_paths


def main() -> None:
    marker = stage_paths("check", __doc__).params_marker
    check_params_file("params.yaml")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("params.yaml: every section valid, every file and variable it names present\n", encoding="utf-8")


if __name__ == "__main__":
    run_main(main)

"""check: every section of params.yaml (unknown sections refused) and the files and environment variables it
names, before the first stage does any work; writes the constant marker data/check/params.ok, which fetch
depends on, so that a valid change of params reruns nothing downstream by itself."""

from pathlib import Path

from ragtune.checks import check_params_file
from ragtune.stage import run_main

MARKER = Path("data/check/params.ok")


def main() -> None:
    check_params_file("params.yaml")
    MARKER.parent.mkdir(parents=True, exist_ok=True)
    MARKER.write_text("params.yaml: every section valid, every file and variable it names present\n", encoding="utf-8")


if __name__ == "__main__":
    run_main(main)

"""This repository's generated project files, kept true to their one source:

    python -m ragtune.project --check   # exit 1 naming each stale file
    python -m ragtune.project --write   # rewrite them

- dvc.yaml: the stage definitions (`ragtune.project.pipeline`) with each stage's code dependencies traced from
  its module's imports (`ragtune.project.code_deps`), so a changed module reruns exactly the stages that import it;
- .ragtune/stage: the stage launcher, as `ragtune init` writes it into every project;
- src/ragtune/project/params.yaml: the packaged copy of params.yaml (ragtune's defaults, with their comments),
  from which `ragtune init` writes a project's params.yaml.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from .code_deps import source_code_deps
from .pipeline import LAUNCHER, render

DEFAULT_PARAMS = "src/ragtune/project/params.yaml"
HEADER = (
    "Generated from ragtune.project.pipeline (the stage definitions `ragtune init` projects use too), with each\n"
    "stage's code dependencies traced from its imports: edit the definitions, then `python -m ragtune.project "
    "--write`."
)


def launcher_text() -> str:
    return (resources.files("ragtune.project") / "launcher.sh").read_text(encoding="utf-8")


def expected_files(repo: Path) -> dict[str, str]:
    """Each generated file of the repository at `repo` -> the text it should hold."""
    return {
        "dvc.yaml": render(code_deps=source_code_deps(repo), header=HEADER),
        LAUNCHER: launcher_text(),
        DEFAULT_PARAMS: (repo / "params.yaml").read_text(encoding="utf-8"),
    }


def stale_files(repo: Path) -> list[str]:
    out = []
    for rel, text in expected_files(repo).items():
        path = repo / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            out.append(rel)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ragtune.project", description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 when a generated file is stale")
    mode.add_argument("--write", action="store_true", help="rewrite the generated files")
    ap.add_argument("--repo", type=Path, default=Path("."))
    args = ap.parse_args(argv)
    stale = stale_files(args.repo)
    if args.write:
        for rel, text in expected_files(args.repo).items():
            if rel in stale:
                (args.repo / rel).parent.mkdir(parents=True, exist_ok=True)
                (args.repo / rel).write_text(text, encoding="utf-8")
        print(f"rewritten: {', '.join(stale)}" if stale else "up to date")
        return 0
    for rel in stale:
        print(f"{rel}: stale; run `python -m ragtune.project --write` and commit", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())

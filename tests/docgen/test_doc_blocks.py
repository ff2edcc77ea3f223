"""Every code block of README.md and docs/ that claims to run is run by a test (tests/doc_blocks.py says how a
block is tagged), and the shell blocks tagged `commands` are checked here line by line against the real thing:
`make T` dry-runs the Makefile's target, `ragtune ...` parses with ragtune's own parser, `dvc repro` / `dvc exp run`
overrides (`-S key=value`) are applied to params.yaml and validated as the check stage validates them."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from doc_blocks import REPO, RUNNABLE, Block, all_blocks, blocks_tagged, command_lines, fenced_blocks

BLOCKS = all_blocks()
TEST_KINDS = sorted({b.kind for b in BLOCKS if b.tag == "test"})
COMMAND_BLOCKS = blocks_tagged("commands")


def test_every_fence_names_a_language_and_every_runnable_block_is_tagged():
    unnamed = [b.where for b in BLOCKS if not b.language]
    untagged = [b.where for b in BLOCKS if b.language in RUNNABLE and b.tag is None]
    assert not unnamed, f"fenced blocks without a language (```text for a diagram): {unnamed}"
    assert not untagged, (
        f"code blocks with neither <!-- test: KIND --> nor <!-- example: why --> above them: {untagged}"
    )
    assert all(b.kind for b in BLOCKS if b.tag), "a tag without a KIND or a reason"


@pytest.mark.parametrize("kind", TEST_KINDS)
def test_every_test_kind_has_a_test_that_runs_it(kind):
    """A block tagged `test: KIND` is run by a test that asks for blocks_tagged("KIND")."""
    wanted = f'blocks_tagged("{kind}")'
    runners = [p.name for p in sorted(REPO.glob("tests/**/*.py")) if wanted in p.read_text(encoding="utf-8")]
    where = [b.where for b in blocks_tagged(kind)]
    assert runners, f"{where}: tagged `test: {kind}`, but no test under tests/ asks for {wanted}"


def test_the_block_parser_sees_tags_indentation_and_untagged_fences(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# t\n\n<!-- test: demo -->\n<!-- another comment -->\n```python\nprint(1)\n```\n\n"
        "- item\n\n  <!-- example: needs your server -->\n  ```bash\n  mlflow server\n  ```\n\n```sh\nls\n```\n",
        encoding="utf-8",
    )
    first, second, third = fenced_blocks(page)
    assert (first.tag, first.kind, first.language, first.line) == ("test", "demo", "python", 5)
    assert first.code == "print(1)\n"
    assert (second.tag, second.kind, second.code) == ("example", "needs your server", "mlflow server\n")
    assert third.tag is None and third.language == "sh"


# --- the `commands` blocks ------------------------------------------------------------------------------------


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return {line.split(":", 1)[0] for line in text.splitlines() if line and not line[0].isspace() and ":" in line}


def check_make(argv: list[str]) -> None:
    (target,) = argv[1:]
    assert target in make_targets(), f"make {target}: no such target in the Makefile"
    dry = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, f"make -n {target}: {dry.stderr}"


def check_ragtune(argv: list[str]) -> None:
    from ragtune.cli import build_parser

    try:
        build_parser().parse_args(argv[1:])
    except SystemExit as exc:
        pytest.fail(f"{shlex.join(argv)}: ragtune's parser refuses it (exit {exc.code})")


def check_dvc(argv: list[str]) -> None:
    """`dvc repro` or `dvc exp run`, each -S override valid against params.yaml."""
    from ragtune.benchmark.workspaces import apply_overrides, validate_params
    from ragtune.params import SECTIONS

    assert argv[1:3] == ["exp", "run"] or argv[1] == "repro", f"{shlex.join(argv)}: no check for this dvc command"
    overrides = [argv[i + 1] for i, arg in enumerate(argv) if arg in ("-S", "--set-param")]
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    validate_params(apply_overrides(params, overrides, SECTIONS), shlex.join(argv))


CHECKS = {"make": check_make, "ragtune": check_ragtune, "dvc": check_dvc, "export": lambda argv: None}


@pytest.mark.parametrize("block", COMMAND_BLOCKS, ids=[b.where for b in COMMAND_BLOCKS])
def test_command_blocks_name_real_targets_commands_and_params(block):
    lines = command_lines(block)
    assert lines, f"{block.where}: an empty commands block"
    for argv in lines:
        assert argv[0] in CHECKS, f"{block.where}: `{argv[0]}` has no check; tag the block `example:` or add one"
        CHECKS[argv[0]](argv)


@pytest.mark.parametrize(
    "code, error",
    [
        ("make no-such-target\n", "no such target"),
        ("ragtune search --no-such-option q\n", "refuses it"),
        ("dvc exp run -S train.no_such_key=1\n", "train.no_such_key: unknown key"),
        ("rm -rf data\n", "`rm` has no check"),
    ],
)
def test_a_stale_command_fails_its_check(code, error):
    from ragtune.errors import ParamsError

    block = Block(REPO / "README.md", 1, "bash", code, "test", "commands")
    with pytest.raises((AssertionError, ParamsError, pytest.fail.Exception), match=error):
        test_command_blocks_name_real_targets_commands_and_params(block)


def test_the_readme_keeps_to_its_first_screens():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail to docs/"
    headings = [line for line in lines if line.startswith("## ")]
    first_screen = ["## Two commands", "## Results at a glance", "## Your own corpus", "## Which retriever to deploy"]
    assert headings[:4] == first_screen


def test_doc_pages_are_where_the_blocks_say(tmp_path):
    """blocks_tagged reads README.md and every page under docs/."""
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "README.md").write_text("<!-- test: k -->\n```bash\nmake run\n```\n", encoding="utf-8")
    (tmp_path / "docs" / "sub" / "p.md").write_text("<!-- test: k -->\n```python\nx = 1\n```\n", encoding="utf-8")
    found = blocks_tagged("k", tmp_path)
    assert [(b.path.relative_to(tmp_path), b.language) for b in found] == [
        (Path("README.md"), "bash"),
        (Path("docs/sub/p.md"), "python"),
    ]

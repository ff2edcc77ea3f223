"""The ragtune modules a stage script runs, found by following its imports: dvc.yaml's code dependencies.

`dvc repro` reruns a stage when one of its listed dependencies changes, so a module a stage imports but does
not list can change its results without a rerun. This module derives the list instead of keeping it by hand:

    python -m ragtune.project.code_deps --check   # exit 1, naming each missing or extra entry
    python -m ragtune.project.code_deps --write   # rewrite the code entries of dvc.yaml's deps

A stage's code is its script plus every `ragtune` module reachable from it through `import` statements
(at module level or inside functions, absolute or relative), with the `__init__.py` of each package on the
way (importing `a.b.c` runs `a/__init__.py` and `a/b/__init__.py`). Imports under `if TYPE_CHECKING:` are
not followed: they never run. Each module is listed as a file, not as its folder, so a change reruns exactly
the stages that import it. Non-Python files a stage reads (prompts) are data dependencies and stay as written.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "ragtune"


@dataclass(frozen=True)
class SourceTree:
    """Where the package's source lives: `root` holds the package folder (`<root>/ragtune/...`)."""

    root: Path

    def module_file(self, name: str) -> Path | None:
        """The file of module `name` (`ragtune.x.y` -> x/y.py or x/y/__init__.py), None if not in the tree."""
        parts = name.split(".")
        if parts[0] != PACKAGE:
            return None
        base = self.root.joinpath(*parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None

    def module_name(self, path: Path) -> str:
        rel = path.relative_to(self.root).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: all of them but those under `if TYPE_CHECKING:`."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The absolute module a `from ... import` names, resolving leading dots against `importer`."""
    if not node.level:
        return node.module or ""
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(path: Path, tree_root: SourceTree) -> set[str]:
    """The `ragtune` modules that `path` imports directly (names, e.g. `ragtune.records`)."""
    source = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    inside = tree_root.root in path.resolve().parents
    importer = tree_root.module_name(path.resolve()) if inside else "__main__"
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _runtime_imports(source):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        module = _absolute(node, importer, is_package)
        found.add(module)
        # `from pkg import name`: `name` may be a submodule (imported) or an attribute (not a module).
        found.update(f"{module}.{alias.name}" for alias in node.names if alias.name != "*")
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def code_files(script: Path, tree: SourceTree) -> list[Path]:
    """`script` and every ragtune source file its imports reach, transitively (sorted, script first)."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in imported_modules(path, tree):
            for name in _with_parents(module):
                file = tree.module_file(name)
                if file is not None and file not in seen:
                    todo.append(file)
    return [script, *sorted(p for p in seen if p != script)]


# --- dvc.yaml ------------------------------------------------------------------------------------


def is_code_entry(dep: str, code_roots: Iterable[str]) -> bool:
    """Whether a dvc.yaml dep is code (a .py file, or a folder of the package's Python source)."""
    roots = tuple(r.rstrip("/") for r in code_roots)
    if dep.endswith(".py"):
        return True
    return any(dep == r or dep.startswith(r + "/") for r in roots) and not Path(dep).suffix and _holds_python(dep)


def _holds_python(dep: str) -> bool:
    folder = Path(dep)
    return folder.is_dir() and any(folder.rglob("*.py"))


def script_of(cmd: str) -> str | None:
    """The stage script a `python stages/x.py ...` command runs, or None."""
    words = cmd.split()
    for i, word in enumerate(words[:-1]):
        if Path(word).name.startswith("python") and words[i + 1].endswith(".py"):
            return words[i + 1]
    return None


def expected_code_deps(dvc_yaml: Mapping, project: Path, src: str = "src") -> dict[str, list[str]]:
    """Per stage whose cmd runs a Python script: the code deps it should list (paths relative to `project`)."""
    tree = SourceTree((project / src).resolve())
    out: dict[str, list[str]] = {}
    for name, stage in dvc_yaml.get("stages", {}).items():
        script = script_of(" ".join(str(stage.get("cmd", "")).split()))
        if script is None:
            continue
        files = code_files((project / script).resolve(), tree)
        out[name] = [str(f.relative_to(project.resolve())) for f in files]
    return out


def compare(dvc_yaml: Mapping, project: Path, src: str = "src") -> dict[str, dict[str, list[str]]]:
    """Per stage, the code deps `missing` from dvc.yaml and those listed but `extra` (not imported)."""
    problems: dict[str, dict[str, list[str]]] = {}
    roots = [src + "/" + PACKAGE, "stages"]
    for name, expected in expected_code_deps(dvc_yaml, project, src).items():
        listed = [str(d) for d in dvc_yaml["stages"][name].get("deps", [])]
        code = [d for d in listed if is_code_entry(d, roots)]
        missing = sorted(set(expected) - set(code))
        extra = sorted(set(code) - set(expected))
        if missing or extra:
            problems[name] = {"missing": missing, "extra": extra}
    return problems


def rewrite(path: Path, project: Path, src: str = "src") -> list[str]:
    """Replace the code entries of each stage's deps in dvc.yaml with the derived ones, first in the list; the
    data deps keep their lines (and comments) and order. Returns the stages that changed."""
    import yaml

    text = path.read_text(encoding="utf-8")
    expected = expected_code_deps(yaml.safe_load(text), project, src)
    roots = [src + "/" + PACKAGE, "stages"]
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    stage: str | None = None
    changed: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("  ") and not line.startswith("   ") and line.rstrip().endswith(":"):
            stage = line.strip()[:-1]
        out.append(line)
        i += 1
        if stage not in expected or line.strip() != "deps:":
            continue
        indent = " " * (len(line) - len(line.lstrip()) + 2)
        block: list[str] = []
        while i < len(lines) and lines[i].startswith(indent + "- "):
            block.append(lines[i])
            i += 1
        entries = [b.strip()[2:].split(" #")[0].strip() for b in block]
        data = [b for b, e in zip(block, entries) if not is_code_entry(e, roots)]
        code = [e for e in entries if is_code_entry(e, roots)]
        if code != expected[stage]:
            changed.append(stage)
        out += [f"{indent}- {dep}\n" for dep in expected[stage]] + data
    if changed:
        path.write_text("".join(out), encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"))
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 when a stage's code deps are not the derived ones")
    mode.add_argument("--write", action="store_true", help="rewrite the code deps in dvc.yaml")
    args = ap.parse_args(argv)
    project = args.dvc_yaml.resolve().parent
    if args.write:
        changed = rewrite(args.dvc_yaml, project)
        print(f"{args.dvc_yaml}: code deps rewritten for {', '.join(changed)}" if changed else "up to date")
        return 0
    import yaml

    problems = compare(yaml.safe_load(args.dvc_yaml.read_text(encoding="utf-8")), project)
    for stage, p in problems.items():
        for kind in ("missing", "extra"):
            for dep in p[kind]:
                print(f"{args.dvc_yaml}: stage {stage}: {kind} code dep {dep}")
    if problems:
        print("fix: python -m ragtune.project.code_deps --write", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

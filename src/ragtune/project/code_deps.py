"""The ragtune modules a stage runs, found by following its imports: dvc.yaml's code dependencies in a source
checkout (`ragtune.project.pipeline` renders them; `python -m ragtune.project --write` rewrites dvc.yaml).

`dvc repro` reruns a stage when one of its listed dependencies changes, so a module a stage imports but does
not list could change its results without a rerun: the list is derived, never kept by hand.

A stage's code is its script plus every `ragtune` module reachable from it through `import` statements
(at module level or inside functions, absolute or relative), with the `__init__.py` of each package on the
way (importing `a.b.c` runs `a/__init__.py` and `a/b/__init__.py`). Imports under `if TYPE_CHECKING:` are
not followed: they never run. Each module is listed as a file, not as its folder, so a change reruns exactly
the stages that import it. Non-Python files a stage reads (prompts) are listed by the stage definitions.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable
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
    """`script` and every ragtune source file its imports reach, transitively (sorted, script first); a script
    inside the package also runs its own packages' `__init__.py` (`python -m ragtune.stages.x`)."""
    seen: set[Path] = set()
    todo = [script]
    if tree.root in script.resolve().parents:
        for name in _with_parents(tree.module_name(script.resolve()))[:-1]:
            file = tree.module_file(name)
            if file is not None:
                todo.append(file)
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


def stage_module_file(name: str, src: Path) -> Path:
    """The source file of stage `name` in a source tree whose package root is `src`."""
    return src / "ragtune" / "stages" / f"{name}.py"


def source_code_deps(project: Path, src: str = "src") -> Callable[[str], list[str]]:
    """`code_deps` for `pipeline.render` in a source checkout: each stage's module and the ragtune files it imports."""
    tree = SourceTree((project / src).resolve())
    root = project.resolve()

    def deps(name: str) -> list[str]:
        files = code_files(stage_module_file(name, tree.root), tree)
        return [str(f.relative_to(root)) for f in files]

    return deps

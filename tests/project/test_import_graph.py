"""The package's import graph has no loop and no upward import.

The graph is built from the source (ragtune.project.code_deps' module resolution): an edge A -> B for every
`import` or `from ... import` in A that names ragtune module B, wherever it stands: at module level, inside a
function, or under `if TYPE_CHECKING:` (a type-only loop is still a loop: the two modules cannot be
understood, moved or tested apart). Importing a package's submodule runs the package's `__init__`, but that is
not counted as an edge: only what a module names.

Layers (`LAYERS`, lowest first): a module may import modules of its own layer or a lower one, never a higher
one. Every module of src/ragtune must be in a layer, so a new module is placed deliberately.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from ragtune.project.code_deps import SourceTree, _absolute

SRC = Path(__file__).resolve().parents[2] / "src"

# Module-name prefixes per layer; a module belongs to the layer of its longest matching prefix.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "foundations: errors, files, params, data contracts, text and ranking rules",
        (
            "ragtune.errors",
            "ragtune.io",
            "ragtune.credentials",
            "ragtune.params",
            "ragtune.records",
            "ragtune.embeddings_npz",
            "ragtune.textnorm",
            "ragtune.labels",
            "ragtune.cache",
            "ragtune.plots",
            "ragtune.tracking",
            "ragtune.paths",
            "ragtune.experiments",
            "ragtune.evaluation.ranking",
            "ragtune.evaluation.statistics",
        ),
    ),
    (
        "building blocks: LLM backends, embedding, search, corpus sources, deployable fusion and stores",
        (
            "ragtune.llm",
            "ragtune.embedding",
            "ragtune.search",
            "ragtune.corpus",
            "ragtune.deploy.hybrid",
            "ragtune.deploy.stores",
        ),
    ),
    (
        "pipeline logic: what the stages compute",
        ("ragtune.synthesis", "ragtune.adapter", "ragtune.evaluation", "ragtune.judge"),
    ),
    (
        "applications: stage runner, commands, benchmarks, tools",
        (
            "ragtune",
            "ragtune.stage",
            "ragtune.checks",
            "ragtune.commands",
            "ragtune.cli",
            "ragtune.readme",
            "ragtune.mlflow_ui",
            "ragtune.cache_repair",
            "ragtune.deploy",
            "ragtune.label",
            "ragtune.estimate",
            "ragtune.benchmark",
            "ragtune.project",
            "ragtune.stages",
            "ragtune.docgen",
            "ragtune.__main__",
        ),
    ),
)


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.walk(tree):  # every import statement: module level, in functions, under TYPE_CHECKING
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """module -> the ragtune modules it names in any import statement (itself excluded)."""
    tree = SourceTree(src.resolve())
    graph: dict[str, set[str]] = {}
    for path in sorted((src / "ragtune").rglob("*.py")):
        name = tree.module_name(path.resolve())
        named: set[str] = set()
        for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                named.update(alias.name for alias in node.names)
                continue
            module = _absolute(node, name, path.name == "__init__.py")
            named.add(module)
            # `from pkg import name`: `name` is a submodule when such a file exists, else an attribute of pkg
            named.update(f"{module}.{alias.name}" for alias in node.names if alias.name != "*")
        targets = {tree.module_name(f) for m in named if (f := tree.module_file(m)) is not None}
        graph[name] = targets - {name}
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def layer_of(module: str) -> int | None:
    """The index in LAYERS of `module`'s longest matching prefix; None when no prefix matches."""
    best: tuple[int, int] | None = None
    for level, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            # the root package's prefix names only its __init__, so that every other module is placed explicitly
            if module == prefix or (prefix != "ragtune" and module.startswith(prefix + ".")):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), level)
    return None if best is None else best[1]


def upward_imports(graph: Mapping[str, set[str]]) -> list[str]:
    return sorted(
        f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
        for a, targets in graph.items()
        for b in targets
        if (layer_of(a) or 0) < (layer_of(b) or 0)
    )


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_sees_every_kind_of_import(graph):
    # A type-only import (adapter/data.py's RealQuestions was one), one inside a function, a relative one.
    assert "ragtune.adapter.real_questions" in graph["ragtune.adapter.data"]
    assert "ragtune.evaluation.ranking" in graph["ragtune.adapter.splits"]
    assert {"ragtune.errors", "ragtune.io"} <= graph["ragtune.embeddings_npz"]
    assert len(graph) > 100


def test_no_import_loop(graph):
    assert cycles(graph) == [], "import loops (move the shared types into a module both can import)"


def test_every_module_is_in_a_layer(graph):
    unplaced = [m for m in graph if layer_of(m) is None]
    assert unplaced == [], "add the new module to LAYERS (tests/project/test_import_graph.py)"


def test_no_import_from_a_lower_layer_to_a_higher_one(graph):
    assert upward_imports(graph) == []


def test_the_checks_catch_a_loop_a_type_only_loop_and_an_upward_import(tmp_path):
    files = {
        "ragtune/__init__.py": "",
        "ragtune/errors.py": "from .llm import base\n",  # upward: foundations -> building blocks
        "ragtune/llm/__init__.py": "",
        "ragtune/llm/base.py": "def f():\n    from . import other\n",
        "ragtune/llm/other.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .base import f\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    toy = import_graph(tmp_path)
    assert cycles(toy) == [["ragtune.llm.base", "ragtune.llm.other"]]
    assert upward_imports(toy) == [
        "ragtune.errors (layer 0) imports ragtune.llm (layer 1)",  # `from .llm import base` runs llm/__init__
        "ragtune.errors (layer 0) imports ragtune.llm.base (layer 1)",
    ]

"""The package's layering, read from its imports: no cycles between subpackages, and nothing
below the driver imports the driver or the command line.

Every import counts: module level, inside functions, and under ``TYPE_CHECKING`` alike: a
deferred import still ties the two modules' designs together.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import sparse_tvm

PACKAGE = Path(sparse_tvm.__file__).parent
API = "(api)"  # sparse_tvm/__init__.py: the public API sits on top of everything
LOWER = ("tuning", "transform", "micro", "kernels", "pipeline")  # must not import upward
UPPER = ("driver", "cli")


def _unit(module: str) -> str:
    """The layer a dotted module belongs to: its subpackage, or the top-level module."""
    parts = module.split(".")
    if parts == ["sparse_tvm"]:
        return API
    return parts[1]


def _module_of(path: Path) -> tuple[str, bool]:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts), is_package


def _imports(path: Path) -> set[str]:
    """The sparse_tvm modules ``path`` imports (``from X import y`` counts X and X.y)."""
    module, is_package = _module_of(path)
    package = module if is_package else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "sparse_tvm":
                found.add(target)
                # `from sparse_tvm import errors` imports the submodule, not the API
                found.update(
                    f"{target}.{a.name}"
                    for a in node.names
                    if (PACKAGE.parent / f"{target}.{a.name}".replace(".", "/")).exists()
                    or (PACKAGE.parent / (f"{target}.{a.name}".replace(".", "/") + ".py")).exists()
                )
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "sparse_tvm")
    return found


def unit_graph() -> dict[str, set[str]]:
    """Layer -> the layers it imports (itself excluded)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        source = _unit(_module_of(path)[0])
        graph[source]
        for target in _imports(path):
            unit = _unit(target)
            if unit != source:
                graph[source].add(unit)
    return dict(graph)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one layer (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read_from_the_package():
    graph = unit_graph()
    # facts a broken reader would miss: the driver uses the back ends and the decision, the
    # back ends the kernels' lowering, the API the driver
    assert {"backends", "decision", "frontend"} <= graph["driver"]
    assert "transform" in graph["backends"] and "driver" in graph[API]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_cycle_between_subpackages():
    assert cycles(unit_graph()) == []


def test_nothing_below_the_driver_imports_the_driver_or_the_cli():
    graph = unit_graph()
    upward = sorted((low, up) for low in LOWER for up in UPPER if up in graph.get(low, ()))
    assert upward == []
    # and no layer but the CLI (and the API's __main__) imports the CLI
    assert sorted(u for u, deps in graph.items() if "cli" in deps) == ["__main__"]

"""No import cycles inside cedana_gpu.

The graph is built with ``ast`` from every module's source, and counts every
import, at module level or inside a function: an import deferred into a
function still runs, and a cycle hidden that way breaks as soon as someone
moves the import to the top (or two such functions call each other at import
time). Deferring an import stays fine for what it is meant for, not loading
cuda-bindings or the driver early, as long as it does not close a cycle.

An edge goes from a module to each cedana_gpu module it imports: ``import
a.b.c`` and ``from a.b import c`` (``c`` a module) point at ``a.b.c``; ``from
a.b import name`` (not a module) at ``a.b``. A package's own ``__init__``
being run before its submodules is not an edge: Python always does that, and
it only matters when an ``__init__`` imports its submodules, which is then an
edge of its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import cedana_gpu

PACKAGE = Path(cedana_gpu.__file__).parent

"""Edges (importer, imported) that close a cycle known and being fixed elsewhere."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports included)."""
    if node.level == 0:
        return node.module or ""
    base = current.split(".")
    if not is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = resolve(name, is_package, node)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None (iterative DFS, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        todo = [iter(sorted(graph[start]))]
        state[start] = 1
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                todo.pop()
                continue
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                todo.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_the_graph_sees_top_level_and_deferred_imports() -> None:
    graph = import_graph()
    assert "cedana_gpu.cr.dump" in graph and "cedana_gpu.cli" in graph
    assert "cedana_gpu.cr.pipeline" in graph["cedana_gpu.cr.dump"]  # at module level
    assert "cedana_gpu.controller.native" in graph["cedana_gpu.cr.dump"]  # inside a function


def test_find_cycle_finds_one_and_only_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_cedana_gpu_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])

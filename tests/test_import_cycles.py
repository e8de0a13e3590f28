"""No import cycles among our modules: console/, workers/ and engine/ form a directed acyclic graph.

The graph is read from the source with the stdlib `ast`, so it holds every import a module can run: at
the top and inside functions alike (a lazy import dodges a cycle at import time, it does not remove the
dependency). Imports under `if TYPE_CHECKING:` are left out: they never run. Importing `a.b.c` also
runs the packages `a` and `a.b`, so those count as imported too. No cycle is allowed (the allow-list is
empty): break one with a seam (send a task by name through the Celery app, register a hook) or by moving
the shared piece down into the module both sides import."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent

PACKAGES = ("console", "workers", "engine")
ALLOWED_CYCLES: list[set[str]] = []  # none, and keep it so


def module_files(root: Path) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every dotted name the module imports (top level, in functions and classes; not under TYPE_CHECKING)."""
    names: set[str] = set()
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package this module is in (or is)
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names)  # `from pkg import module`
        pending.extend(ast.iter_child_nodes(node))
    return names


def import_graph(root: Path) -> nx.DiGraph:
    files = module_files(root)
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for module, path in files.items():
        # the packages above a module have started running before it does: importing them adds nothing
        running = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
        for name in imported_names(ast.parse(path.read_text(), str(path)), module, path.name == "__init__.py"):
            parts = name.split(".")
            # the module itself (or, for `from module import attribute`, the longest prefix that is a module),
            # and the packages above it, which importing it runs first
            targets = {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & files.keys()
            graph.add_edges_from((module, target) for target in targets - running)
    return graph


def cycles(graph: nx.DiGraph) -> list[set[str]]:
    """Each group of modules that import one another, directly or not (strongly connected, more than one)."""
    return sorted((c for c in nx.strongly_connected_components(graph) if len(c) > 1), key=sorted)


def describe(graph: nx.DiGraph, component: set[str]) -> str:
    cycle = nx.find_cycle(graph.subgraph(component))
    return " -> ".join([a for a, _ in cycle] + [cycle[0][0]])


def test_console_workers_and_engine_import_one_another_without_cycles():
    graph = import_graph(ROOT)
    assert graph.number_of_nodes() > 100, "found too few modules: is the walk looking in the right place?"
    assert {"console.jobs.models", "workers.tasks", "engine.runner"} <= set(graph)
    found = [c for c in cycles(graph) if c not in ALLOWED_CYCLES]
    assert not found, "import cycles:\n" + "\n".join(describe(graph, c) for c in found)


@pytest.mark.parametrize("lazy", [False, True], ids=["top-level", "inside a function"])
def test_a_cycle_fails_the_check_whether_its_import_is_at_the_top_or_inside_a_function(tmp_path: Path, lazy: bool):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "console" / "jobs.py").write_text("from workers.tasks import run\n")
    back = "def run():\n    from console import jobs\n" if lazy else "from console import jobs\n"
    (tmp_path / "workers" / "tasks.py").write_text(back)
    (tmp_path / "engine" / "runner.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from console.jobs import Job\n")
    graph = import_graph(tmp_path)
    assert cycles(graph) == [{"console.jobs", "workers.tasks"}]
    assert describe(graph, cycles(graph)[0]) in ("console.jobs -> workers.tasks -> console.jobs",
                                                 "workers.tasks -> console.jobs -> workers.tasks")
    assert not graph.has_edge("engine.runner", "console.jobs")  # a TYPE_CHECKING import never runs

"""The package layering: who may import whom, and no import cycle between packages.

The layers, from the bottom: ``store`` and ``core`` (the domain: no HTTP, no Jupyter),
``gateway`` (model calls, tornado-free) and ``demo`` (a local upstream), ``server`` (every
HTTP handler, both hosts) and ``service`` (the standalone host), and on the kernel side
``kernel`` and ``widgets``, which talk to the server over HTTP only.  ``kernel``'s own
parts are layers too: ``kernel.client`` under ``widgets`` and ``kernel.display``, and
``kernel.magics`` on top of them all.  Imports are read
from the source (also those inside functions and under ``TYPE_CHECKING``), so a lazy
import cannot hide a violation.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lumen_jupyter"

FORBIDDEN: dict[str, set[str]] = {
    "core": {"server", "gateway", "kernel", "widgets", "demo", "service"},
    "store": {"server", "gateway", "kernel", "widgets", "demo", "service"},
    "gateway": {"server", "kernel", "widgets", "demo", "service"},
    "demo": {"server", "gateway", "kernel", "widgets", "service"},
    "server": {"kernel", "widgets", "service"},
    "kernel.client": {"server", "gateway", "service", "store", "demo", "widgets", "kernel.magics"},
    "kernel.display": {"server", "gateway", "service", "store", "demo", "kernel.magics"},
    "kernel.magics": {"server", "gateway", "service", "store", "demo"},
    "widgets": {"server", "gateway", "service", "store", "demo", "kernel.magics"},
}
SPLIT = {"kernel"}
"""Packages whose subpackages are layers of their own."""


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "lumen_jupyter" or len(parts) < 2:
        return None
    if parts[1] in SPLIT and len(parts) > 2 and (PACKAGE / parts[1] / parts[2]).is_dir():
        return f"{parts[1]}.{parts[2]}"
    return parts[1]


def _imports(path: Path) -> set[str]:
    """The lumen_jupyter modules that ``path`` imports, as absolute dotted names."""
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    here = list(relative.parts[:-1])  # the package that holds the module (or is it)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("lumen_jupyter.")}


def package_graph() -> dict[str, set[str]]:
    """Which top-level package of lumen_jupyter imports which other."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if len(relative.parts) < 2:
            continue  # the top-level modules (cli, __init__) may use every layer
        source = _package_of(".".join(("lumen_jupyter", *relative.with_suffix("").parts)))
        if source is None or (source in SPLIT and len(relative.parts) == 2):
            continue  # a split package's own __init__ only re-exports its parts
        for name in _imports(path):
            target = _package_of(name)
            if target is None or target == source or target in SPLIT:
                continue
            if (PACKAGE / target.replace(".", "/")).is_dir():
                graph.setdefault(source, set()).add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path of nodes, or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle_between_packages() -> None:
    assert find_cycle(package_graph()) is None


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_imports_nothing_above_it(package: str) -> None:
    imported = package_graph().get(package, set())
    assert not imported & FORBIDDEN[package], f"{package} imports {imported & FORBIDDEN[package]}"


def test_the_checks_can_fail() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    graph = package_graph()
    assert "core" in graph.get("gateway", set())  # the graph sees real imports
    assert "gateway" in graph.get("server", set())
    assert "kernel.client" in graph.get("widgets", set())

"""The import graph of ``oe``: no module imports, directly or through others, one that imports it
back; imports inside functions count too (they run sooner or later), those under
``if TYPE_CHECKING:`` do not (they never run). The graph comes from the source (ast), nothing is
imported.

``python tests/test_import_cycles.py`` prints every cycle with the imports that close it."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def modules() -> dict[str, Path]:
    found = {}
    for path in (ROOT / "oe").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {oe module it imports: the line of the first such import}."""
    known = modules()

    def owner(name: str) -> str | None:  # the module a dotted name lives in
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {name: {} for name in known}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(kept + ([base] if base else []))
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in targets:
                found = owner(target)
                if found is not None and found != name:
                    graph[name].setdefault(found, node.lineno)
    return graph


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:`` (for type hints only)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def cycles(graph: dict[str, dict[str, int]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for after in graph[node]:
            if after not in index:
                visit(after)
                low[node] = min(low[node], low[after])
            elif after in stack:
                low[node] = min(low[node], index[after])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    found = [sorted(c) for c in cycles(import_graph())]
    assert not found, f"import cycles: {found} (python {Path(__file__).relative_to(ROOT)})"


def test_the_finder_finds_a_cycle():
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert cycles(graph) == [{"a", "b", "c"}]


def test_imports_for_type_hints_alone_are_not_edges():
    tree = ast.parse("from typing import TYPE_CHECKING\nimport x\nif TYPE_CHECKING:\n"
                     "    import y\nelse:\n    import z\ndef f():\n    import w\n")
    imported = {alias.name for node in _runtime_nodes(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    assert imported == {"x", "z", "w"}


if __name__ == "__main__":
    graph = import_graph()
    for component in cycles(graph):
        print("cycle:", " ".join(sorted(component)))
        for name in sorted(component):
            for after, line in sorted(graph[name].items()):
                if after in component:
                    print(f"    {name} -> {after} (line {line})")

"""The import graph of ``oe``: no module imports, directly or through others, one that imports it
back; imports inside functions count too (they run sooner or later). The graph comes from the
source (ast), nothing is imported.

``python tests/test_import_cycles.py`` prints every cycle with the imports that close it."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Cycles being taken apart; the test fails on any other (and on none of these growing).
KNOWN = [{"oe.distributed.checkpoint", "oe.distributed.parallelize", "oe.distributed.strategy",
          "oe.training.lm"},
         {"oe.training.lm", "oe.training.sharding"}]  # the Lightning glue moving out of distributed/


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
        for node in ast.walk(ast.parse(path.read_text())):
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


def test_no_new_import_cycles():
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    unknown = [sorted(c) for c in cycles(import_graph()) if not any(c <= k for k in KNOWN)]
    assert not unknown, f"import cycles: {unknown} (python {Path(__file__).relative_to(ROOT)})"


def test_the_finder_finds_a_cycle():
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert cycles(graph) == [{"a", "b", "c"}]


if __name__ == "__main__":
    graph = import_graph()
    for component in cycles(graph):
        print("cycle:", " ".join(sorted(component)))
        for name in sorted(component):
            for after, line in sorted(graph[name].items()):
                if after in component:
                    print(f"    {name} -> {after} (line {line})")

"""``oe bench NAME [--out FILE] ...``: run the benchmark ``oe.bench.NAME``.

Each benchmark module defines ``main(argv) -> int``; it prints a table and writes its figures as
JSON (by default to ``bench_results/NAME.json``).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import sys
from pathlib import Path

import oe.bench


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(oe.bench.__path__)
                  if not m.name.startswith("_") and m.name != "common")


def summary(name: str) -> str:
    """The first line of benchmark ``name``'s docstring, read without importing it (torch)."""
    source = Path(oe.bench.__path__[0]) / f"{name}.py"
    doc = ast.get_docstring(ast.parse(source.read_text())) or ""
    line = doc.split("\n")[0]
    return line.split(":", 1)[1].strip() if line.startswith("``") and ":" in line else line


def usage() -> str:
    names = available()
    width = max(map(len, names))
    lines = ["usage: oe bench NAME [options]   (oe bench NAME --help for its options)", "",
             "Each benchmark prints a table and writes its figures as JSON (default "
             "bench_results/NAME.json);", "ratios are measured side by side in one run.", "",
             "benchmarks:"]
    lines += [f"  {name.ljust(width)}  {summary(name)}" for name in names]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    names = available()
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] not in names:
        print(f"error: unknown benchmark {argv[0]!r}; choose one of {', '.join(names)}",
              file=sys.stderr)
        return 2
    return importlib.import_module(f"oe.bench.{argv[0]}").main(argv[1:])


if __name__ == "__main__":  # as ``oe bench``: --verbose taken off, known warnings quiet
    from oe.cli import process

    sys.exit(process("bench"))

"""``python -m oe.bench NAME [--out FILE] ...``: run the benchmark ``oe.bench.NAME``.

Each benchmark module defines ``main(argv) -> int``; it prints a table and writes its figures as
JSON (by default to ``bench_results/NAME.json``).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import oe.bench


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(oe.bench.__path__)
                  if not m.name.startswith("_") and m.name != "common")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    names = available()
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m oe.bench {{{','.join(names)}}} [options]")
        return 0 if argv else 2
    if argv[0] not in names:
        print(f"error: unknown benchmark {argv[0]!r}; choose one of {', '.join(names)}",
              file=sys.stderr)
        return 2
    return importlib.import_module(f"oe.bench.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())

"""``python -m oe.sweep``, the same as ``oe sweep`` (oe.cli.sweep)."""

import sys

from oe.cli import run_module

if __name__ == "__main__":
    sys.exit(run_module("sweep"))

"""``python -m oe.generate``, the same as ``oe generate`` (oe.cli.generate)."""

import sys

from oe.cli import run_module

if __name__ == "__main__":
    sys.exit(run_module("generate"))

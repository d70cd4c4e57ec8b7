"""``python -m oe.evaluate``, the same as ``oe evaluate`` (oe.cli.evaluate)."""

import sys

from oe.cli import run_module

if __name__ == "__main__":
    sys.exit(run_module("evaluate"))

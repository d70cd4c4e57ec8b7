"""``python -m oe.plot``, the same as ``oe plot`` (oe.cli.plot)."""

import sys

from oe.cli import run_module

if __name__ == "__main__":
    sys.exit(run_module("plot"))

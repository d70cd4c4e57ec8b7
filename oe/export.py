"""``python -m oe.export``, the same as ``oe export`` (oe.cli.export)."""

import sys

from oe.cli import run_module

if __name__ == "__main__":
    sys.exit(run_module("export"))

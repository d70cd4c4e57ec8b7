"""``python -m oe.fit``, the same as ``oe fit`` (oe.cli.fit)."""

import sys

from oe.cli import run_module

if __name__ == "__main__":
    sys.exit(run_module("fit"))

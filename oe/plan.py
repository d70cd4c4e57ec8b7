"""``python -m oe.plan``, the same as ``oe plan`` (oe.cli.plan)."""

import sys

from oe.cli import run_module

if __name__ == "__main__":
    sys.exit(run_module("plan"))

"""``python -m oe.mine``, the same as ``oe mine`` (oe.cli.mine)."""

import sys

from oe.cli import run_module

if __name__ == "__main__":
    sys.exit(run_module("mine"))

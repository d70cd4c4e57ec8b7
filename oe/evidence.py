"""``python -m oe.evidence``, the same as ``oe evidence`` (oe.cli.evidence)."""

import sys

from oe.cli import run_module

if __name__ == "__main__":
    sys.exit(run_module("evidence"))

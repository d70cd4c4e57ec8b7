"""``python -m oe.evidence``, the same as ``oe evidence`` (oe.cli.evidence)."""

import sys

from oe.cli import process

if __name__ == "__main__":
    sys.exit(process("evidence"))

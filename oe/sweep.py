"""``python -m oe.sweep``, the same as ``oe sweep`` (oe.cli.sweep)."""

import sys

from oe.cli import process

if __name__ == "__main__":
    sys.exit(process("sweep"))

"""``python -m oe.generate``, the same as ``oe generate`` (oe.cli.generate)."""

import sys

from oe.cli import process

if __name__ == "__main__":
    sys.exit(process("generate"))

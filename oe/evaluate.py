"""``python -m oe.evaluate``, the same as ``oe evaluate`` (oe.cli.evaluate)."""

import sys

from oe.cli import process

if __name__ == "__main__":
    sys.exit(process("evaluate"))

"""``python -m oe.plot``, the same as ``oe plot`` (oe.cli.plot)."""

import sys

from oe.cli import process

if __name__ == "__main__":
    sys.exit(process("plot"))

"""``python -m oe.export``, the same as ``oe export`` (oe.cli.export)."""

import sys

from oe.cli import process

if __name__ == "__main__":
    sys.exit(process("export"))

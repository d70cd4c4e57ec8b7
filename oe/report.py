"""``python -m oe.report``, the same as ``oe report`` (oe.cli.report)."""

import sys

from oe.cli import process

if __name__ == "__main__":
    sys.exit(process("report"))

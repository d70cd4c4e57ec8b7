"""``python -m oe.plan``, the same as ``oe plan`` (oe.cli.plan)."""

import sys

from oe.cli import process

if __name__ == "__main__":
    sys.exit(process("plan"))

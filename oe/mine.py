"""``python -m oe.mine``, the same as ``oe mine`` (oe.cli.mine)."""

import sys

from oe.cli import process

if __name__ == "__main__":
    sys.exit(process("mine"))

"""``python -m oe.fit``, the same as ``oe fit`` (oe.cli.fit)."""

import sys

from oe.cli import process

if __name__ == "__main__":
    sys.exit(process("fit"))

"""``python -m oe SUBCOMMAND ...``, the same as the ``oe`` command."""

import sys

from oe.cli import process

if __name__ == "__main__":
    sys.exit(process())

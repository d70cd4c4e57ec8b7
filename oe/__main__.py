"""``python -m oe SUBCOMMAND ...``, the same as the ``oe`` command."""

import sys

from oe.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m oe.sweep``, the same as ``oe sweep`` (oe.cli.sweep)."""

import sys

from oe.cli.sweep import main

if __name__ == "__main__":
    sys.exit(main())

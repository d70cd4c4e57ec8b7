"""``python -m oe.plot``, the same as ``oe plot`` (oe.cli.plot)."""

import sys

from oe.cli.plot import main

if __name__ == "__main__":
    sys.exit(main())

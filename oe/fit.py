"""``python -m oe.fit``, the same as ``oe fit`` (oe.cli.fit)."""

import sys

from oe.cli.fit import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m oe.report``, the same as ``oe report`` (oe.cli.report)."""

import sys

from oe.cli.report import main

if __name__ == "__main__":
    sys.exit(main())

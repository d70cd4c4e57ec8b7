"""``python -m oe.generate``, the same as ``oe generate`` (oe.cli.generate)."""

import sys

from oe.cli.generate import main

if __name__ == "__main__":
    sys.exit(main())

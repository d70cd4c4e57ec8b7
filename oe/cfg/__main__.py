"""``python -m oe.cfg``, the same as ``oe cfg`` (oe.cli.cfg)."""

import sys

from oe.cli.cfg import main

if __name__ == "__main__":
    sys.exit(main())

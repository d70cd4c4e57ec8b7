"""``python -m oe.mine``, the same as ``oe mine`` (oe.cli.mine)."""

import sys

from oe.cli.mine import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m oe.evidence``, the same as ``oe evidence`` (oe.cli.evidence)."""

import sys

from oe.cli.evidence import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m oe.corpus``: the experiment oe.experiments.corpus."""

import sys

from oe.experiments.corpus import main

if __name__ == "__main__":
    sys.exit(main())

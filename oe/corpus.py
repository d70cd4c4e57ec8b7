"""``python -m oe.corpus``: the experiment oe.experiments.corpus."""

import sys

from oe.cli import process

if __name__ == "__main__":
    sys.exit(process("corpus"))

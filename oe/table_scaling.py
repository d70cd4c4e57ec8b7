"""``python -m oe.table_scaling``: the experiment oe.experiments.table_scaling."""

import sys

from oe.cli import process

if __name__ == "__main__":
    sys.exit(process("table-scaling"))

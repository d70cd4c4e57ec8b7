"""``python -m oe.table_scaling``: the experiment oe.experiments.table_scaling."""

import sys

from oe.cli import run_module

if __name__ == "__main__":
    sys.exit(run_module("table-scaling"))

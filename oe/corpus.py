"""``python -m oe.corpus``: the experiment oe.experiments.corpus."""

import sys

from oe.cli import run_module

if __name__ == "__main__":
    sys.exit(run_module("corpus"))

"""``python -m oe.table_scaling``: the experiment oe.experiments.table_scaling."""

import sys

from oe.experiments.table_scaling import main

if __name__ == "__main__":
    sys.exit(main())

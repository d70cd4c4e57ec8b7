"""``python -m oe.lm_eval``, the same as ``oe lm-eval`` (oe.cli.lm_eval)."""

import sys

from oe.cli.lm_eval import main

if __name__ == "__main__":
    sys.exit(main())

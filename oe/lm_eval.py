"""``python -m oe.lm_eval``, the same as ``oe lm-eval`` (oe.cli.lm_eval)."""

import sys

from oe.cli import process

if __name__ == "__main__":
    sys.exit(process("lm-eval"))

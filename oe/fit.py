"""``python -m oe.fit``, the same as ``oe fit`` (oe.cli.fit)."""

import sys

from oe.cli.fit_usage import USAGE, wants_usage

if __name__ == "__main__":
    if wants_usage(sys.argv[1:]):  # at once: LightningCLI's own help imports the whole stack
        print(USAGE)
        sys.exit(0)
    from oe.cli.fit import main

    sys.exit(main())

"""``python -m oe.plot RUN_DIR ... --out FIG.png``: metric curves of runs, side by side.

Reads each run's CSV metrics (``<run>/**/metrics.csv``, the newest when there are several),
groups runs by label (by default the directory name without its seed suffix, so ``cfg_oe3-seed0``
and ``cfg_oe3-seed1`` form ``cfg_oe3``; or ``--labels``), and draws one panel per metric: the
mean over a group's runs at the steps they all logged, with the min-max band shaded.
``--summary-step S`` also prints the values at step S as a markdown table.
"""

from __future__ import annotations
import argparse
import sys
from collections import defaultdict
from pathlib import Path

from oe.analysis.plot import (default_label, plot_runs, print_summary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oe.plot", description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (or metrics.csv)")
    parser.add_argument("--metrics", nargs="+", default=["val/loss", "val/gen_acc"])
    parser.add_argument("--labels", nargs="+", default=None,
                        help="one label per run (default: directory name without the seed)")
    parser.add_argument("--title", default=None)
    parser.add_argument("--summary-step", type=int, default=None,
                        help="also print a markdown table of the metrics at this step")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.labels is not None and len(args.labels) != len(args.runs):
        parser.error(f"--labels has {len(args.labels)} entries for {len(args.runs)} runs")
    groups: dict[str, list[Path]] = defaultdict(list)
    for i, run in enumerate(args.runs):
        groups[args.labels[i] if args.labels else default_label(run)].append(run)
    try:
        path = plot_runs(dict(groups), args.metrics, args.out, args.title)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    if args.summary_step is not None:
        print_summary(dict(groups), args.metrics, args.summary_step)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``oe report [RUN ...] [--wandb PROJECT/GROUP] --out DIR``: plots and a summary.

Reads every run layout the project writes (``oe.analysis.report.read_run``): run folders of
``oe.fit`` (their CSV, or their offline W&B runs), folders holding a ``metrics.csv`` and lone CSV
files (``docs/evidence/*``), a folder of any of these (``runs/<sweep>``), with the results
``oe.evaluate`` wrote into each run folder (``eval/*.json``); or every run of a W&B group online.
Writes into DIR:

- ``curves_<group>.png`` per group: each metric against the step (or ``--x tokens``), the seeds of
  one configuration as one line with a min-max band, long curves smoothed (``--smooth``), a robust
  y-range (one spike does not flatten a panel). Default metrics: those of train/loss, val/loss,
  val/excess_loss, val/gen_acc and val/gen_viable_frac that some run logged.
- ``loglinear.png``: the loss against log10(m) per group of Over-Encoding runs that differ only in m
  (same orders, k, size), at the largest step all of them reached, m labelled on each point, with
  the least-squares line beside the paper's slope b = -0.0256 (OLMoE-1.3B, Huang et al. 2025);
- ``report.md``: the runs, the fits (slope per decade of m with its 95% interval), the comparison
  at equal tokens and the downstream table (``downstream/<task>/acc`` and ``acc_norm``).

``--out`` is checked before anything is read or drawn.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from oe.analysis.report import DEFAULT_METRICS, render
from oe.analysis.runs import STEP, TOKENS, ReportError, expand_run_dirs, read_run, read_wandb_group
from oe.cli.paths import check_output_dir
from oe.cli.flags import Parser


def metric_list(values: list[str] | None) -> list[str] | None:
    """``--metrics a,b c``: comma-separated, space-separated or both."""
    if values is None:
        return None
    return [m.strip() for value in values for m in value.split(",") if m.strip()]


def add_curve_arguments(parser: argparse.ArgumentParser) -> None:
    """The curve options ``oe report`` and ``oe plot`` share."""
    parser.add_argument("runs", nargs="*", type=Path,
                        help="runs: run folders, folders with metrics.csv, CSV files, or folders "
                             "of these (e.g. runs/<sweep>, docs/evidence/<name>)")
    parser.add_argument("--out", required=True, type=Path, help="where to write")
    parser.add_argument("--metrics", nargs="+", default=None,
                        help=f"curves to draw (comma- or space-separated), each required of every "
                             f"run (default: those of {', '.join(DEFAULT_METRICS)} some run logged)")
    parser.add_argument("--x", choices=[STEP, "tokens"], default=STEP,
                        help=f"the curves' x-axis: the step, or {TOKENS} (default: step)")
    parser.add_argument("--smooth", type=float, default=0.6,
                        help="EMA weight for curves of 20 or more points, 0 <= w < 1 (0: none; "
                             "default: 0.6)")


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="oe report", description=__doc__.split("\n\n")[0])
    add_curve_arguments(parser)
    parser.add_argument("--wandb", action="append", default=[], metavar="PROJECT/GROUP",
                        help="also read every run of this W&B group (online; repeatable)")
    parser.add_argument("--fit_metric", default=None,
                        help="the loss fitted against log10(m) (default: val/loss, where every "
                             "run logged it)")
    parser.add_argument("--final_window", type=int, default=1,
                        help="final value = mean of this many last logged values (default: 1)")
    args = parser.parse_args(argv)
    metrics = metric_list(args.metrics)
    x = STEP if args.x == STEP else TOKENS
    try:
        check_output_dir(args.out, "--out")
        if not args.runs and not args.wandb:
            raise ReportError("give runs and/or --wandb PROJECT/GROUP")
        if metrics == [] or args.final_window < 1 or not 0 <= args.smooth < 1:
            raise ReportError("--metrics needs at least one metric, --final_window must be >= 1 "
                              "and --smooth within [0, 1)")
        runs = [read_run(p) for p in expand_run_dirs(args.runs)]
        for spec in args.wandb:
            runs += read_wandb_group(spec)
        report = render(runs, args.out, metrics, args.fit_metric or "val/loss", args.final_window,
                        x, args.smooth, require_fit_metric=args.fit_metric is not None)
    except ValueError as err:  # ReportError and the output check
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {report} and its PNGs for {len(runs)} run(s)")
    return 0

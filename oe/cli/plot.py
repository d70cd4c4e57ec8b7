"""``oe plot RUN ... --out FIG.png``: ``oe report``'s curves of some runs, in one PNG.

The same reading, series, bands, smoothing, y-range and flags as ``oe report`` (``oe.cli.report``),
without its report: the seeds of one configuration form a series (the run's name without its
seed, or ``--labels``), drawn as its mean with the min-max band. ``--summary_step S`` also prints
each series' values at step S as a Markdown table.
"""

from __future__ import annotations

import sys

from oe.analysis.plot import plot_curves
from oe.analysis.report import choose_metrics, values_at_step
from oe.analysis.runs import STEP, TOKENS, ReportError, expand_run_dirs, read_run
from oe.cli.paths import check_output_file
from oe.cli.report import add_curve_arguments, metric_list
from oe.cli.flags import Parser


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="oe plot", description=__doc__.split("\n\n")[0])
    add_curve_arguments(parser)
    parser.add_argument("--labels", nargs="+", default=None,
                        help="one series label per run (default: the run's name without its seed)")
    parser.add_argument("--title", default=None)
    parser.add_argument("--summary_step", type=int,
                        default=None, help="also print a Markdown table of the metrics at this step")
    args = parser.parse_args(argv)
    x = STEP if args.x == STEP else TOKENS
    try:
        check_output_file(args.out, "--out", "curves.png")
        runs = [read_run(p) for p in expand_run_dirs(args.runs)]
        if not runs:
            raise ReportError("give one or more runs")
        if args.labels is not None and len(args.labels) != len(runs):
            raise ReportError(f"--labels has {len(args.labels)} entries for {len(runs)} runs")
        labels = args.labels or [r.label for r in runs]
        metrics = choose_metrics(runs, metric_list(args.metrics))
        curves = {m: {} for m in metrics}
        for run, label in zip(runs, labels):
            for metric in metrics:
                if run.history.get(metric):
                    curves[metric].setdefault(label, []).append(run.curve(metric, x))
        path = plot_curves(curves, args.out, args.title, xlabel=x, smoothing=args.smooth)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    if args.summary_step is not None:
        for run, label in zip(runs, labels):
            run.name = label  # the table's rows are the series
        print("\n".join(values_at_step(runs, metrics, args.summary_step)))
    return 0

"""``python -m oe.report [RUN_DIR ...] [--wandb PROJECT/GROUP] --out DIR``: plots and a summary.

Reads runs from local run folders (``csv/version_*/metrics.csv``, or the offline W&B run in
``wandb/offline-run-*/run-*.wandb`` when there is no CSV; a folder of run folders, such as
``runs/<sweep>``, counts as all of them) or from W&B online (every run of a project's group). Writes
into DIR:

- ``curves_<group>.png`` per W&B group: each metric (default: train/loss and val/loss, and
  val/excess_loss, val/gen_acc, val/gen_viable_frac where some run logged them) against the step,
  one line per run (drawn by ``oe.analysis.plot``);
- ``loglinear.png``: final loss against log10(m) for the Over-Encoding runs, the least-squares line
  ``L = a + b log10(m)``, beside the paper's slope b = -0.0256 (OLMoE-1.3B, Huang et al. 2025);
- ``report.md``: the runs, the fit (slope per decade of m with its 95% confidence interval) and the
  comparison at equal tokens (each validation metric at the largest ``train/tokens`` every run
  reached) and the downstream table (``downstream/<task>/acc`` and ``acc_norm`` at the end).
"""

from __future__ import annotations
import argparse
import sys
from pathlib import Path

from oe.analysis.report import (DEFAULT_METRICS, EXTRA_METRICS, ReportError, expand_run_dirs,
                                read_run_dir, read_wandb_group, render)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="*", type=Path,
                        help="run folders, or folders of run folders (e.g. runs/<sweep>)")
    parser.add_argument("--wandb", action="append", default=[], metavar="PROJECT/GROUP",
                        help="also read every run of this W&B group (online; repeatable)")
    parser.add_argument("--out", required=True, type=Path, help="folder for the PNGs and report.md")
    parser.add_argument("--metrics", default=None,
                        help=f"curves to draw, comma-separated, each required of every run "
                             f"(default: {','.join(DEFAULT_METRICS)}, and "
                             f"{','.join(EXTRA_METRICS)} where some run logged them)")
    parser.add_argument("--fit-metric", default="val/loss",
                        help="the loss fitted against log10(m) (default: val/loss)")
    parser.add_argument("--final-window", type=int, default=1,
                        help="final value = mean of this many last logged values (default: 1)")
    args = parser.parse_args(argv)
    chosen = args.metrics is not None
    metrics = ([m.strip() for m in args.metrics.split(",") if m.strip()] if chosen
               else list(DEFAULT_METRICS))
    try:
        if not args.run_dirs and not args.wandb:
            raise ReportError("give run folders and/or --wandb PROJECT/GROUP")
        if not metrics or args.final_window < 1:
            raise ReportError("--metrics needs at least one metric and --final-window must be >= 1")
        runs = [read_run_dir(p) for p in expand_run_dirs(args.run_dirs)]
        for spec in args.wandb:
            runs += read_wandb_group(spec)
        report = render(runs, args.out, metrics, args.fit_metric, args.final_window,
                        extra_metrics=[] if chosen else EXTRA_METRICS)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {report} and its PNGs for {len(runs)} run(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

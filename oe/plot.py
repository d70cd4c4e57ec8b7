"""``python -m oe.plot RUN_DIR ... --out FIG.png``: metric curves of runs, side by side.

Reads each run's CSV metrics (``<run>/**/metrics.csv``, the newest when there are several),
groups runs by label (by default the directory name without its seed suffix, so ``cfg_oe3-seed0``
and ``cfg_oe3-seed1`` form ``cfg_oe3``; or ``--labels``), and draws one panel per metric: the
mean over a group's runs at the steps they all logged, with the min-max band shaded.
``--summary-step S`` also prints the values at step S as a markdown table.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def find_metrics_csv(run_dir: Path) -> Path:
    """The metrics.csv of a run directory (the newest logger version)."""
    run_dir = Path(run_dir)
    if run_dir.is_file() and run_dir.name.endswith(".csv"):
        return run_dir
    found = sorted(run_dir.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"{run_dir}: no metrics.csv under this run directory")
    return found[-1]


def read_curve(path: Path, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of ``metric`` in a Lightning CSVLogger file; empty if never logged."""
    steps, values = [], []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            value = row.get(metric, "")
            if value not in ("", None):
                steps.append(int(float(row["step"])))
                values.append(float(value))
    order = np.argsort(steps, kind="stable")
    return np.asarray(steps)[order], np.asarray(values)[order]


def default_label(run_dir: Path) -> str:
    """A run's group: its directory name without a trailing seed (``-seed1``, ``_s0``...)."""
    return re.sub(r"[-_](seed|s)\d+$", "", Path(run_dir).name)


def plot_runs(runs: dict[str, list[Path]], metrics: list[str], out: Path,
              title: str | None = None) -> Path:
    """Draw ``metrics`` (one panel each) for groups of run directories; returns ``out``."""
    curves = {metric: {label: [read_curve(find_metrics_csv(d), metric) for d in dirs]
                       for label, dirs in runs.items()} for metric in metrics}
    return plot_curves(curves, out, title)


Curve = tuple[np.ndarray, np.ndarray]  # (steps, values)


def plot_curves(curves: dict[str, dict[str, list[Curve]]], out: Path,
                title: str | None = None) -> Path:
    """One panel per metric of ``curves[metric][label]`` (a label's runs: mean line, min-max band)."""
    metrics = list(curves)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.8), squeeze=False)
    missing = []
    for ax, metric in zip(axes[0], metrics):
        for label, runs_curves in curves[metric].items():
            curves_ = [c for c in runs_curves if len(c[0])]
            if not curves_:
                missing.append(f"{label}: {metric}")
                continue
            common = sorted(set.intersection(*(set(s.tolist()) for s, _ in curves_)))
            stacked = np.array([[dict(zip(s.tolist(), v))[t] for t in common] for s, v in curves_])
            mean = stacked.mean(0)
            line, = ax.plot(common, mean, marker="o" if len(common) < 30 else None,
                            markersize=3, label=f"{label} (n={len(curves_)})")
            if len(curves_) > 1:
                ax.fill_between(common, stacked.min(0), stacked.max(0), alpha=0.2,
                                color=line.get_color())
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if missing and len(missing) == sum(len(by_label) for by_label in curves.values()):
        plt.close(fig)
        raise ValueError(f"none of the runs logged any of {metrics}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def values_at(runs: dict[str, list[Path]], metric: str, step: int) -> dict[str, list[float]]:
    """Each group's values of ``metric`` at ``step`` (runs that did not log it there are left out)."""
    table = {}
    for label, dirs in runs.items():
        values = []
        for d in dirs:
            steps, vals = read_curve(find_metrics_csv(d), metric)
            values += [float(v) for s, v in zip(steps.tolist(), vals.tolist()) if s == step]
        table[label] = values
    return table


def print_summary(runs: dict[str, list[Path]], metrics: list[str], step: int) -> None:
    """A markdown table: each group's mean (min..max over runs) of each metric at ``step``."""
    print(f"| group (step {step}) | " + " | ".join(metrics) + " |")
    print("| --- |" + " --- |" * len(metrics))
    columns = [values_at(runs, m, step) for m in metrics]
    for label in runs:
        cells = []
        for column in columns:
            v = column[label]
            cells.append("-" if not v else f"{np.mean(v):.4f} ({min(v):.4f}..{max(v):.4f}, n={len(v)})")
        print(f"| {label} | " + " | ".join(cells) + " |")


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

"""``python -m oe.plot RUN_DIR ... --out FIG.png``: metric curves of runs, side by side.

Reads each run's CSV metrics (``<run>/**/metrics.csv``, the newest when there are several),
groups runs by label (by default the directory name without its seed suffix, so ``cfg_oe3-seed0``
and ``cfg_oe3-seed1`` form ``cfg_oe3``; or ``--labels``), and draws one panel per metric: the
mean over a group's runs at the steps they all logged, with the min-max band shaded.
``--summary-step S`` also prints the values at step S as a markdown table.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


History = dict[str, list[tuple[int, float]]]  # metric -> sorted (step, value)


def csv_version(path: Path) -> int:
    """The number of a Lightning logger folder ``version_N`` (-1 for any other name)."""
    match = re.search(r"version_(\d+)$", path.name)
    return int(match.group(1)) if match else -1


def merge_csv_versions(files: list[Path]) -> History:
    """Metrics of Lightning CSVLogger files of one run, oldest first.

    A resumed run (a requeued job) writes a new version starting at its checkpoint's step; the rows
    of older versions from that step on were trained again, so the newer ones replace them.
    """
    history: History = {}
    for path in files:
        rows: History = {}
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                step = int(float(row.pop("step")))
                for key, value in row.items():
                    if key != "epoch" and value not in ("", None):
                        rows.setdefault(key, []).append((step, float(value)))
        steps = [s for pts in rows.values() for s, _ in pts]
        if not steps:
            continue
        first = min(steps)
        for key in history:
            history[key] = [(s, v) for s, v in history[key] if s < first]
        for key, pts in rows.items():
            history.setdefault(key, []).extend(pts)
    return {k: sorted(v) for k, v in history.items() if v}


def read_csv_history(csv_root: Path) -> History:
    """Merge ``csv_root/version_*/metrics.csv`` of one run folder."""
    versions = sorted((p for p in Path(csv_root).glob("version_*") if (p / "metrics.csv").exists()),
                      key=csv_version)
    return merge_csv_versions([v / "metrics.csv" for v in versions])


def run_history(run: Path) -> History:
    """Every metric of a run directory (any ``metrics.csv`` beneath it) or of one CSV file."""
    run = Path(run)
    if run.is_file() and run.name.endswith(".csv"):
        files = [run]
    else:
        files = sorted(run.rglob("metrics.csv"), key=lambda p: (csv_version(p.parent), str(p)))
    if not files:
        raise FileNotFoundError(f"{run}: no metrics.csv under this run directory")
    return merge_csv_versions(files)


def read_curve(history: History, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of ``metric``; empty if it was never logged."""
    points = history.get(metric, [])
    return (np.asarray([s for s, _ in points], dtype=np.int64),
            np.asarray([v for _, v in points], dtype=np.float64))


def default_label(run_dir: Path) -> str:
    """A run's group: its directory name without a trailing seed (``-seed1``, ``_s0``...)."""
    return re.sub(r"[-_](seed|s)\d+$", "", Path(run_dir).name)


def plot_runs(runs: dict[str, list[Path]], metrics: list[str], out: Path,
              title: str | None = None) -> Path:
    """Draw ``metrics`` (one panel each) for groups of run directories; returns ``out``."""
    histories = {label: [run_history(d) for d in dirs] for label, dirs in runs.items()}
    curves = {metric: {label: [read_curve(h, metric) for h in hs]
                       for label, hs in histories.items()} for metric in metrics}
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
            values += [v for s, v in run_history(d).get(metric, []) if s == step]
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

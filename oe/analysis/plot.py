"""Drawing metric curves, and reading a run's CSV history (``oe.report`` and its alias ``oe.plot``).

- Reading: Lightning CSVLogger files, versions of a resumed run merged (``merge_csv_versions``).
- Drawing (``plot_curves``): one panel per metric; per series (a run, or the seeds of one
  configuration) a line, the mean over its runs with the min-max band shaded, against the step or
  against ``train/tokens``. Long curves are smoothed (an exponential moving average, debiased as
  TensorBoard does); the y-range is robust: values far outside the bulk (beyond three
  interquartile ranges of the quartiles) are left off the scale and counted in the panel, so one
  spike cannot flatten a panel, but each curve's first point (a short run's main drop) is always
  on it. Tick labels are the values themselves (no offset, no shared power of ten); a flat
  metric gets a range of at least 0.5% of its value, a metric that is 0 throughout 0..1.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

# matplotlib is imported where a figure is drawn: the tools that read runs start at once.


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


def default_label(run: Path | str) -> str:
    """A run's series: its name without a trailing seed (``-seed1``, ``_s0``, ``,seed=2``...), so
    that the seeds of one configuration share a line and a band."""
    return re.sub(r"([-_](seed|s)\d+|[-_,]seed=\d+)$", "", Path(run).name.removesuffix(".csv"))


Curve = tuple[np.ndarray, np.ndarray]  # (x: steps or tokens, values)

SMOOTH_MIN_POINTS = 20  # shorter curves (a few validations) are drawn as logged


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average with weight ``weight`` on the past, debiased at the start."""
    if weight <= 0 or len(values) < SMOOTH_MIN_POINTS:
        return values
    out, average = np.empty(len(values)), 0.0
    for i, value in enumerate(values):
        average = weight * average + (1 - weight) * value
        out[i] = average / (1 - weight ** (i + 1))
    return out


# A panel is never narrower than this share of its values' magnitude: a wiggle of 0.0002 in a loss
# of 1.08 is noise, and drawn over a whole panel it would look like a steep change.
LEAST_RELATIVE_SPAN = 0.005


def robust_limits(values: np.ndarray, reach: float = 3.0,
                  keep: np.ndarray | None = None) -> tuple[float, float]:
    """(low, high) of a panel's y-axis: every value within ``reach`` interquartile ranges of the
    quartiles, and every value of ``keep`` (each curve's first point, the main drop of a short
    run); never narrower than ``LEAST_RELATIVE_SPAN`` of the values' magnitude; a metric that is
    0 throughout gets 0..1 (an accuracy or a rate that never left 0)."""
    values = values[np.isfinite(values)]
    q1, q3 = np.percentile(values, [25, 75])
    spread = q3 - q1
    inside = values[(values >= q1 - reach * spread) & (values <= q3 + reach * spread)]
    if keep is not None:
        inside = np.concatenate([inside, keep[np.isfinite(keep)]])
    low, high = float(inside.min()), float(inside.max())
    least = LEAST_RELATIVE_SPAN * max(abs(low), abs(high))
    if high - low < least:
        middle = (low + high) / 2
        low, high = middle - least / 2, middle + least / 2
    if high == low:  # 0 throughout
        low, high = 0.0, 1.0
    pad = 0.05 * (high - low)
    return low - pad, high + pad


def plain_ticks(ax) -> None:
    """Tick labels that read as the values themselves: no offset (``+1.081`` above the axis, with
    ticks of 0.0005 under it) and no shared power of ten; large x values as 250k, 2.5M, 1.2G."""
    from matplotlib.ticker import FuncFormatter, ScalarFormatter

    y = ScalarFormatter(useOffset=False)
    y.set_scientific(False)
    ax.yaxis.set_major_formatter(y)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: compact_number(value)))


def compact_number(value: float) -> str:
    """``2500000`` as ``2.5M``, ``12000`` as ``12k``; smaller values as they are (``%g``)."""
    for least, scale, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if abs(value) >= least:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def mean_band(curves: list[Curve]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, mean, min, max) of several runs' curves where they overlap, on the x of the run with
    the most points there (the others interpolated: seeds log the same steps, but their token
    counts may differ slightly)."""
    start = max(float(x[0]) for x, _ in curves)
    stop = min(float(x[-1]) for x, _ in curves)
    grid = max((x[(x >= start) & (x <= stop)] for x, _ in curves), key=len)
    stacked = np.array([np.interp(grid, x, y) for x, y in curves])
    return grid, stacked.mean(0), stacked.min(0), stacked.max(0)


def draw_panel(ax, by_series: dict[str, list[Curve]], smoothing: float = 0.0) -> bool:
    """One metric's panel: per series its mean line (the min-max band with several runs), the
    y-range of ``robust_limits``, plain tick labels, and how many points lie off the scale (a
    point is one logged x of one series). Returns whether any curve was smoothed."""
    drawn, firsts, off_points, smoothed = [], [], [], False
    for label, runs_curves in by_series.items():
        runs_curves = [(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
                       for x, y in runs_curves if len(x)]
        smoothed |= smoothing > 0 and any(len(y) >= SMOOTH_MIN_POINTS for _, y in runs_curves)
        runs_curves = [(x, smooth(y, smoothing)) for x, y in runs_curves]
        if not runs_curves:
            continue
        x, mean, low, high = mean_band(runs_curves)
        line, = ax.plot(x, mean, marker="o" if len(x) < 30 else None, markersize=3,
                        label=f"{label} (n={len(runs_curves)})")
        if len(runs_curves) > 1:
            ax.fill_between(x, low, high, alpha=0.2, color=line.get_color())
            drawn += [mean, low, high]
        else:  # one run: its band is its line
            drawn.append(mean)
        firsts.append(mean[:1])
        off_points.append((mean, low, high) if len(runs_curves) > 1 else (mean,))
    if drawn:
        low, high = robust_limits(np.concatenate(drawn), keep=np.concatenate(firsts))
        ax.set_ylim(low, high)
        off = sum(int(np.sum(np.any([(a < low) | (a > high) for a in arrays], axis=0)))
                  for arrays in off_points)
        if off:
            ax.text(0.99, 0.98, f"{off} point{'s' if off > 1 else ''} off the scale",
                    transform=ax.transAxes, ha="right", va="top", fontsize=7, color="0.4")
        ax.legend(fontsize=8)
    plain_ticks(ax)
    ax.grid(alpha=0.3)
    return smoothed


def plot_curves(curves: dict[str, dict[str, list[Curve]]], out: Path, title: str | None = None,
                xlabel: str = "step", smoothing: float = 0.0) -> Path:
    """One panel per metric of ``curves[metric][series]`` (a series' runs: mean line, min-max band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(curves)
    if not any(c for by_series in curves.values() for cs in by_series.values() for c in cs
               if len(c[0])):
        raise ValueError(f"none of the runs logged any of {metrics}")
    columns = min(len(metrics), 3)
    rows = -(-len(metrics) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, metrics):
        smoothed = draw_panel(ax, curves[metric], smoothing)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric + (f" (smoothed {smoothing})" if smoothed else ""))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out

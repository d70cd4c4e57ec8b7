"""What ``oe report`` (``oe.cli.report``) writes: ``report.md`` and its PNGs.

The runs come from ``oe.analysis.runs`` (every layout the project writes), the fit and the
comparison at equal tokens from ``oe.analysis.statistics``. Written here: the curves of each group
(``oe.analysis.plot``: seeds as bands, against steps or tokens), ``loglinear.png`` (each group's
fit beside the paper's slope b = -0.0256, OLMoE-1.3B, Huang et al. 2025) and ``report.md`` (the
runs, the fit, the comparison at equal tokens, the downstream table).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from oe.analysis.plot import plot_curves
from oe.analysis.runs import STEP, TOKENS, ReportError, Run
from oe.analysis.statistics import GroupFit, at_equal_tokens, fit_groups

# Read elsewhere, imported from here by code written before the split.
from oe.analysis.runs import read_run, read_run_dir, read_wandb_run  # noqa: F401,E402

PAPER_SLOPE = -0.0256  # per decade of m: L = 2.6754 - 0.0256 log10(m), OLMoE-1.3B, N=2, k=1
PAPER_INTERCEPT = 2.6754
# The default metrics, each shown when some run logged it: losses, then cfg3f's excess loss and
# graded generation; runs without one (Wikitext runs have no val/gen_acc) report "–" there.
DEFAULT_METRICS = ["train/loss", "val/loss", "val/excess_loss", "val/gen_acc", "val/gen_viable_frac"]


def choose_metrics(runs: list[Run], asked: list[str] | None) -> list[str]:
    """The metrics asked for, each required of every run (one error naming every run that lacks
    one); by default, those of ``DEFAULT_METRICS`` that some run logged."""
    if asked is None:
        chosen = [m for m in DEFAULT_METRICS if any(r.history.get(m) for r in runs)]
        if not chosen:
            available = sorted({k for r in runs for k in r.history})
            raise ReportError(f"these runs logged none of {', '.join(DEFAULT_METRICS)}; pick "
                              f"--metrics from: {', '.join(available)}")
        return chosen
    problems = []
    for metric in asked:
        missing = [r.name for r in runs if not r.history.get(metric)]
        if missing:
            problems.append(f"{metric!r} is missing from {len(missing)} run(s): {', '.join(missing)}")
    if problems:
        available = sorted({k for r in runs for k in r.history})
        raise ReportError("; ".join(problems) + f". Metrics these runs have: {', '.join(available)}")
    return list(asked)


def runs_without(runs: list[Run], fit_metric: str) -> list[str]:
    """The Over-Encoding runs (those the fit uses) that never logged ``fit_metric``."""
    return [r.name for r in runs if r.modulus is not None and not r.history.get(fit_metric)]


def check_fit_metric(runs: list[Run], fit_metric: str) -> None:
    missing = runs_without(runs, fit_metric)
    if missing:
        raise ReportError(f"the fit's metric {fit_metric!r} is missing from: {', '.join(missing)}")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "-", text)


def plot_group_curves(runs: list[Run], metrics: list[str], out_dir: Path, x: str = STEP,
                      smoothing: float = 0.0) -> dict[str, Path]:
    """``curves_<group>.png`` per group: one panel per metric, one line per series (a run, or
    the seeds of one configuration as a mean with its min-max band)."""
    written = {}
    for group in sorted({r.group for r in runs}):
        members = sorted((r for r in runs if r.group == group), key=lambda r: (r.modulus or 0, r.name))
        curves: dict[str, dict[str, list]] = {}
        for metric in metrics:
            for run in members:
                if run.history.get(metric):
                    curves.setdefault(metric, {}).setdefault(run.label, []).append(run.curve(metric, x))
        if curves:
            written[group] = plot_curves(curves, out_dir / f"curves_{_slug(group)}.png", title=group,
                                         xlabel=x, smoothing=smoothing)
    return written


def plot_log_linear(fits: list[GroupFit], metric: str, out: Path) -> None:
    """Each group's runs (m labelled on each point) and its least-squares line; the paper's
    slope through the centre of each group's points (its loss scale, OLMoE, is not ours)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, group in enumerate(g for g in fits if g.fit is not None):
        color = f"C{i % 10}"
        x = np.log10(np.asarray([r.modulus for r in group.runs], dtype=float))
        ax.scatter(x, group.loss, color=color, zorder=3)
        for xi, yi, run in zip(x, group.loss, group.runs):
            ax.annotate(f"m={run.modulus:,}", (xi, yi), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color=color)
        grid = np.linspace(x.min() - 0.1, x.max() + 0.1, 50)
        fit = group.fit
        ax.plot(grid, fit.intercept + fit.slope * grid, color=color,
                label=f"{group.group} @ step {group.step}: {fit.slope:+.4f} per decade")
        ax.plot(grid, float(np.mean(group.loss)) + PAPER_SLOPE * (grid - float(x.mean())), ":",
                color=color, alpha=0.7)
    ax.plot([], [], ":", color="0.4", label=f"paper's slope {PAPER_SLOPE} per decade")
    ax.set_xlabel("log10(m)")
    ax.set_ylabel(metric)
    ax.set_title("loss against Over-Encoding table size m, per group", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def downstream_table(runs: list[Run]) -> list[str]:
    keys = sorted({k for r in runs for k in r.history
                   if k.startswith("downstream/") and k.endswith(("/acc", "/acc_norm"))})
    if not keys:
        return ["No run logged downstream metrics (`downstream/<task>/acc`: add the "
                "`callbacks.downstream.DownstreamEvaluation` callback, or run "
                "`oe evaluate --ckpt RUN/checkpoints/last.ckpt`, which writes `RUN/eval/last.json`, "
                "read here)."]
    names = [k.removeprefix("downstream/") for k in keys]
    lines = ["| run | group | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(keys)]
    for run in runs:
        cells = []
        for key in keys:
            value, err = run.final(key), run.final(key + "_stderr")
            cells.append(_fmt(value) + (f" ± {_fmt(err)}" if value is not None and err is not None else ""))
        lines.append(f"| {run.name} | {run.group} | " + " | ".join(cells) + " |")
    return lines


def equal_tokens_table(runs: list[Run], metrics: list[str]) -> list[str]:
    compared = {m: at_equal_tokens(runs, m) for m in metrics if not m.startswith("train/")}
    compared = {m: c for m, c in compared.items() if c is not None}
    lacking = [r.name for r in runs if not r.history.get(TOKENS)]
    if not compared:
        return [f"Not compared: it needs two or more runs that logged `{TOKENS}` beside the "
                f"validation metrics" + (f" (without it: {', '.join(lacking)})" if lacking else "")
                + "."]
    lines = ["Each value at the largest target-token count every run reached for that metric "
             "(linear in tokens between validations), not at equal steps.", "",
             "| run | group | " + " | ".join(f"{m} @ {c[0]:,.0f} tokens" for m, c in compared.items())
             + " |", "|---|---|" + "---|" * len(compared)]
    for run in runs:
        lines.append(f"| {run.name} | {run.group} | "
                     + " | ".join(_fmt(c[1].get(run.name)) for c in compared.values()) + " |")
    if lacking:
        lines += ["", f"Without `{TOKENS}` (left out of this comparison): {', '.join(lacking)}."]
    return lines


def fit_section(runs: list[Run], fit_metric: str, window: int, out: Path) -> list[str]:
    fits = fit_groups(runs, fit_metric, window)
    fitted = [g for g in fits if g.fit is not None]
    if not fitted:
        ms = sorted({r.modulus for r in runs if r.modulus is not None})
        return [f"Not fitted: it needs Over-Encoding runs of one group (orders, k, size) at two or "
                f"more values of m (these runs have {ms or 'none'}).", ""]
    plot_log_linear(fits, fit_metric, out / "loglinear.png")
    lines = [f"Least squares of `{fit_metric}` against log10(m) per group of runs that differ only in "
             f"m, each run's value at the group's aligned step (the largest step all of them reached)"
             + (f", the mean of the last {window} logged values" if window > 1 else "") + ":", "",
             "| group | step | runs | fit | slope per decade of m | 95% interval | per 4x m |",
             "|---|---|---|---|---|---|---|"]
    for g in fits:
        if g.fit is None:
            lines.append(f"| {g.group} | {g.step} | {len(g.runs)} | not fitted: {g.why_not} | – | – | – |")
            continue
        fit = g.fit
        ci = f"[{fit.ci95[0]:+.4f}, {fit.ci95[1]:+.4f}]" if fit.n > 2 else "not defined with two runs"
        lines.append(f"| {g.group} | {g.step} | {fit.n} | {fit.intercept:.4f} {fit.slope:+.4f} log10(m) "
                     f"| {fit.slope:+.4f} | {ci} | {fit.slope * math.log10(4):+.4f} |")
    lines += [f"| paper (OLMoE-1.3B, N=2, k=1, m 2e4..1.28e7) | – | – | "
              f"{PAPER_INTERCEPT} {PAPER_SLOPE:+.4f} log10(m) | {PAPER_SLOPE:+.4f} | – | "
              f"{PAPER_SLOPE * math.log10(4):+.4f} |", "", "![log-linear fit](loglinear.png)", ""]
    return lines


def render(runs: list[Run], out: Path, metrics: list[str] | None = None,
           fit_metric: str = "val/loss", window: int = 1, x: str = STEP,
           smoothing: float = 0.0, require_fit_metric: bool = True) -> Path:
    """``report.md`` and its PNGs in ``out``. ``metrics``: required of every run; None: those of
    ``DEFAULT_METRICS`` that some run logged. ``require_fit_metric``: False when the fit's metric
    was not asked for: runs that never logged it (never validated) get no fit, and the report
    says so."""
    metrics = choose_metrics(runs, metrics)
    unfitted = runs_without(runs, fit_metric)
    if require_fit_metric:
        check_fit_metric(runs, fit_metric)
    runs = sorted(runs, key=lambda r: (r.group, r.modulus or 0, r.name))
    out.mkdir(parents=True, exist_ok=True)
    curve_files = plot_group_curves(runs, metrics, out, x, smoothing)
    md = ["# Report", "", f"{len(runs)} run(s) in {len(set(r.group for r in runs))} group(s).", "",
          "| run | group | m | step | tokens | " + " | ".join(f"final {m}" for m in metrics)
          + " | source |",
          "|---|---|---|---|---|" + "---|" * len(metrics) + "---|"]
    for run in runs:
        last = max((s for pts in run.history.values() for s, _ in pts), default=0)
        tokens = run.final(TOKENS)
        md.append(f"| {run.name} | {run.group} | {run.modulus or '–'} | {last} | "
                  f"{'–' if tokens is None else f'{tokens:,.0f}'} | "
                  + " | ".join(_fmt(run.final(m, window)) for m in metrics) + f" | `{run.source}` |")
    md += ["", "## Curves", "",
           f"Against {'the step' if x == STEP else 'target tokens (train/tokens)'}; the seeds of "
           f"one configuration are one line (their mean) with their min-max band"
           + (f"; curves of 20 or more points smoothed (EMA {smoothing})" if smoothing > 0 else "")
           + "; values far outside a panel's bulk are left off its scale and counted.", ""]
    for group, path in curve_files.items():
        md += [f"Group `{group}`:", "", f"![curves of {group}]({path.name})", ""]
    md += ["## At equal tokens", "", *equal_tokens_table(runs, metrics), ""]
    md += ["## Loss against log10(m)", ""]
    md += ([f"Not fitted: `{fit_metric}` was never logged by {', '.join(unfitted)} (a run that "
            f"never validated); `--fit_metric train/loss` fits the training loss.", ""]
           if unfitted else fit_section(runs, fit_metric, window, out))
    md += ["## Downstream", "", *downstream_table(runs), ""]
    report = out / "report.md"
    report.write_text("\n".join(md))
    return report


def values_at_step(runs: list[Run], metrics: list[str], step: int) -> list[str]:
    """A Markdown table: each series' mean (min..max over its runs) of each metric at ``step``."""
    lines = [f"| series (step {step}) | " + " | ".join(metrics) + " |",
             "| --- |" + " --- |" * len(metrics)]
    for label in dict.fromkeys(r.label for r in runs):
        cells = []
        for metric in metrics:
            v = [value for r in runs if r.label == label
                 for s, value in r.history.get(metric, []) if s == step]
            cells.append("-" if not v else f"{np.mean(v):.4f} ({min(v):.4f}..{max(v):.4f}, n={len(v)})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines

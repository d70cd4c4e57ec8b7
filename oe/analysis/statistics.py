"""The statistics of ``oe report``: the log-linear fit of loss against the table size m, with
its slope's 95% interval from Student's t, per group of runs that differ only in m; and the
comparison of runs at equal training tokens.

- ``fit_log_linear``: least squares of the loss against log10 of the rows per table; the slope's
  interval from Student's t with n - 2 degrees of freedom (``student_t_quantile``, computed here:
  scipy is not a dependency; ``tests/analysis/test_report.py`` checks both against scipy.stats
  where it is installed).
- ``fit_groups``: per group (same orders, k and backbone size), each run's value at the largest
  step every run of the group reached. ``oe.experiments.table_scaling`` takes its slopes from it.
- ``at_equal_tokens``: runs of different batch sizes or kinds compared at the largest
  ``train/tokens`` (target tokens of all ranks) that every run reached, not at equal steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from oe.analysis.evidence import EvidenceError, curve_against_tokens, value_at_tokens
from oe.analysis.runs import TOKENS, ReportError, Run


def student_t_quantile(p: float, dof: int) -> float:
    """The ``p`` quantile of Student's t with ``dof`` degrees of freedom (0.5 < p < 1)."""
    if not 0.5 < p < 1 or dof < 1:
        raise ValueError("student_t_quantile needs 0.5 < p < 1 and dof >= 1")
    log_norm = math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2) - 0.5 * math.log(dof * math.pi)

    def upper_tail(t: float) -> float:  # P(T > t) for t >= 0, integrated in u = atan(t / sqrt(dof))
        u = np.linspace(math.atan(t / math.sqrt(dof)), math.pi / 2, 20001)
        # density(t) dt = exp(log_norm) sqrt(dof) cos(u)^(dof-1) du
        f = np.cos(u) ** (dof - 1) * math.exp(log_norm) * math.sqrt(dof)
        return float(np.sum((f[1:] + f[:-1]) * np.diff(u)) / 2)

    lo, hi = 0.0, 1.0
    while upper_tail(hi) > 1 - p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if upper_tail(mid) > 1 - p else (lo, mid)
    return (lo + hi) / 2


@dataclass
class LogLinearFit:
    intercept: float
    slope: float           # loss change per decade of m
    slope_stderr: float    # nan with only two runs
    ci95: tuple[float, float]
    n: int


def fit_log_linear(m: list[int], loss: list[float]) -> LogLinearFit:
    """Least squares ``loss = a + b log10(m)``; b's 95% interval from Student's t (n - 2 dof)."""
    x, y = np.log10(np.asarray(m, dtype=float)), np.asarray(loss, dtype=float)
    if len(set(x.tolist())) < 2:
        raise ReportError(f"the log-linear fit needs runs at two or more values of m, got {sorted(set(m))}")
    sxx = float(np.sum((x - x.mean()) ** 2))
    slope = float(np.sum((x - x.mean()) * (y - y.mean())) / sxx)
    intercept = float(y.mean() - slope * x.mean())
    n = len(x)
    if n > 2:
        residual = float(np.sum((y - intercept - slope * x) ** 2))
        stderr = math.sqrt(residual / (n - 2) / sxx)
        half = student_t_quantile(0.975, n - 2) * stderr
    else:
        stderr = half = float("nan")
    return LogLinearFit(intercept, slope, stderr, (slope - half, slope + half), n)


@dataclass
class GroupFit:
    """The log-linear fit of one group of runs that differ only in m."""
    group: str
    step: int                    # the aligned step: the largest every run of the group reached
    runs: list[Run]
    loss: list[float]
    fit: LogLinearFit | None     # None with fewer than two values of m
    why_not: str = ""


def fit_groups(runs: list[Run], metric: str, window: int) -> list[GroupFit]:
    """Per fit group (orders, k, size): the loss of each Over-Encoding run at the largest step
    every run of the group logged ``metric`` at or after, and the fit when m takes two values."""
    fits = []
    oe_runs = [r for r in runs if r.modulus is not None and r.history.get(metric)]
    for group in sorted({r.fit_group for r in oe_runs}):
        members = sorted((r for r in oe_runs if r.fit_group == group), key=lambda r: (r.modulus, r.name))
        step = min(r.history[metric][-1][0] for r in members)
        loss = [r.final(metric, window, step) for r in members]
        ms = sorted({r.modulus for r in members})
        if len(ms) < 2:
            fits.append(GroupFit(group, step, members, loss, None,
                                 f"one value of m ({ms[0]}); the fit needs two or more"))
            continue
        fits.append(GroupFit(group, step, members, loss, fit_log_linear([r.modulus for r in members], loss)))
    return fits


def at_equal_tokens(runs: list[Run], metric: str) -> tuple[float, dict[str, float | None]] | None:
    """(T, value of each run at T): T is the largest train/tokens at which every run that logged
    ``metric`` had logged it, values linear in tokens between logged points. None when fewer than
    two runs logged it against train/tokens. Runs without the metric get None."""
    curves = {}
    for run in runs:
        if run.history.get(metric) and run.history.get(TOKENS):
            try:
                curves[run.name] = curve_against_tokens(run.history, metric)
            except EvidenceError:  # logged at steps without train/tokens: not comparable
                continue
    if len(curves) < 2:
        return None
    tokens = min(curve[-1][0] for curve in curves.values())
    values: dict[str, float | None] = {}
    for run in runs:
        curve = curves.get(run.name)
        values[run.name] = (value_at_tokens(curve, tokens)
                            if curve and curve[0][0] <= tokens else None)
    return tokens, values

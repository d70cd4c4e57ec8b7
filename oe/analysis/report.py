"""What ``python -m oe.report`` (``oe.cli.report``) reads, fits and writes.

- Reading: a local run folder (its CSV history, or its offline W&B run file when it has no CSV; a
  folder of run folders counts as all of them), or every run of a W&B group online, as ``Run``.
- The fit: least squares of final loss against log10 of the rows per table, with the slope's
  95% interval from Student's t (``fit_log_linear``), beside the paper's slope b = -0.0256
  (OLMoE-1.3B, Huang et al. 2025). ``oe.experiments.table_scaling`` takes its slopes from it too.
- Writing: the curves of each group (drawn by ``oe.analysis.plot``), ``loglinear.png`` and
  ``report.md`` (the runs, the fit, the comparison at equal tokens, the downstream table).
- Equal tokens: runs of different batch sizes or kinds are compared at the largest ``train/tokens``
  (target tokens of all ranks) that every run reached, not at equal steps (``at_equal_tokens``).
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from oe.analysis.evidence import EvidenceError, curve_against_tokens, value_at_tokens
from oe.analysis.plot import csv_version, plot_curves, read_csv_history

PAPER_SLOPE = -0.0256  # per decade of m: L = 2.6754 - 0.0256 log10(m), OLMoE-1.3B, N=2, k=1
PAPER_INTERCEPT = 2.6754
DEFAULT_METRICS = ["train/loss", "val/loss"]
# Shown beside the default metrics when some run has them (cfg3f data: the grammar's loss floor and
# graded generation); runs without them, such as Wikitext runs, report "–" there.
EXTRA_METRICS = ["val/excess_loss", "val/gen_acc", "val/gen_viable_frac"]
TOKENS = "train/tokens"


class ReportError(ValueError):
    """Runs that cannot give the report asked for; the message says which and why."""


@dataclass
class Run:
    name: str
    group: str
    source: str  # the folder or W&B path it was read from
    config: dict = field(default_factory=dict)
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def modulus(self) -> int | None:
        over_encoding = (self.config.get("model") or {}).get("over_encoding")
        if isinstance(over_encoding, dict) and over_encoding.get("modulus"):
            return int(over_encoding["modulus"])
        return None

    def final(self, metric: str, window: int = 1) -> float | None:
        """Mean of the last ``window`` logged values of ``metric``; None if never logged."""
        points = self.history.get(metric)
        if not points:
            return None
        return float(np.mean([v for _, v in points[-window:]]))


# -- reading local runs -----------------------------------------------------------------------

_WANDB_BLOCK = 32768  # the LevelDB log format that .wandb files use: 32 KiB blocks
_WANDB_HEADER = struct.Struct("<4sHB")  # ":W&B", magic 0xBEE1, version
_RECORD_HEADER = struct.Struct("<IHB")  # crc32c, length, type (1 full, 2 first, 3 middle, 4 last)


def read_wandb_records(path: Path):
    """Yield the protobuf Records of an offline W&B run file (``run-*.wandb``)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, magic, _ = _WANDB_HEADER.unpack_from(data, 0)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ReportError(f"{path} is not a W&B run file (bad header)")
    pos, pending = _WANDB_HEADER.size, b""
    while pos + _RECORD_HEADER.size <= len(data):
        left_in_block = _WANDB_BLOCK - pos % _WANDB_BLOCK
        if left_in_block < _RECORD_HEADER.size:  # the block's tail is zero padding
            pos += left_in_block
            continue
        _, length, kind = _RECORD_HEADER.unpack_from(data, pos)
        pos += _RECORD_HEADER.size
        chunk, pos = data[pos:pos + length], pos + length
        if kind == 0:  # zero-filled space of a block that was never written
            pos += _WANDB_BLOCK - pos % _WANDB_BLOCK if pos % _WANDB_BLOCK else 0
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def _update_config(config: dict, items) -> None:
    for item in items:
        key = item.key or "/".join(item.nested_key)
        if not key.startswith("_"):
            config[key] = json.loads(item.value_json)


def read_wandb_info(path: Path) -> dict:
    """The run record of a W&B run file: name, group, id, project and tags (the first record)."""
    for record in read_wandb_records(path):
        if record.WhichOneof("record_type") == "run":
            return _run_info(record.run)
    raise ReportError(f"{path} holds no W&B run record")


def _run_info(run) -> dict:
    return {"name": run.display_name, "group": run.run_group, "id": run.run_id,
            "project": run.project, "tags": list(run.tags)}


def read_wandb_run(path: Path) -> tuple[dict, dict[str, list[tuple[int, float]]], dict]:
    """(config, history, run info) of an offline W&B run file."""
    config: dict = {}
    history: dict[str, list[tuple[int, float]]] = {}
    info: dict = {}
    for record in read_wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":  # the config given to wandb.init comes with the run record
            info = _run_info(record.run)  # the last one wins
            _update_config(config, record.run.config.update)
        elif kind == "config":  # later config.update() calls
            _update_config(config, record.config.update)
        elif kind == "history":
            row = {(i.key or "/".join(i.nested_key)): i.value_json for i in record.history.item}
            step = row.get("trainer/global_step", row.get("_step"))
            if step is None:
                continue
            for key, text in row.items():
                if key.startswith("_") or key in ("trainer/global_step", "epoch"):
                    continue
                value = json.loads(text)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    history.setdefault(key, []).append((int(float(step)), float(value)))
    return config, {k: sorted(v) for k, v in history.items()}, info


def _is_run_dir(path: Path) -> bool:
    return (path / "csv").is_dir() or any((path / "wandb").glob("offline-run-*/run-*.wandb"))


def read_run_dir(path: Path) -> Run:
    path = Path(path)
    config: dict = {}
    configs = sorted((path / "csv").glob("version_*/config.yaml"), key=lambda p: csv_version(p.parent))
    if configs:
        config = yaml.safe_load(configs[-1].read_text()) or {}
    history = read_csv_history(path / "csv") if (path / "csv").is_dir() else {}
    info: dict = {}
    wandb_files = sorted((path / "wandb").glob("offline-run-*/run-*.wandb"))
    if wandb_files:
        w_config, w_history, info = read_wandb_run(wandb_files[-1])
        config = config or w_config
        history = history or w_history
    if not history:
        raise ReportError(f"{path}: no metrics (neither csv/version_*/metrics.csv nor an offline "
                          f"W&B run with history rows)")
    name = config.get("run_name") or info.get("name") or path.name
    group = config.get("run_group") or info.get("group") or path.parent.name
    return Run(name, group, str(path), config, history)


def expand_run_dirs(paths: list[Path]) -> list[Path]:
    """Each path is a run folder, or a folder whose subfolders are (a sweep's folder)."""
    found = []
    for path in paths:
        if not path.is_dir():
            raise ReportError(f"{path} is not a folder")
        if _is_run_dir(path):
            found.append(path)
            continue
        children = sorted(p for p in path.iterdir() if p.is_dir() and _is_run_dir(p))
        if not children:
            raise ReportError(f"{path} holds no run (no csv/ or wandb/offline-run-*), "
                              f"nor do its subfolders")
        found += children
    return found


# -- reading W&B online -----------------------------------------------------------------------

def read_wandb_group(spec: str) -> list[Run]:
    """Every run of ``[ENTITY/]PROJECT/GROUP`` on the W&B server (needs a key and the network)."""
    import wandb

    project, _, group = spec.rpartition("/")
    if not project or not group:
        raise ReportError(f"--wandb wants PROJECT/GROUP (or ENTITY/PROJECT/GROUP), got {spec!r}")
    runs = []
    for remote in wandb.Api().runs(project, filters={"group": group}):
        history: dict[str, list[tuple[int, float]]] = {}
        for row in remote.scan_history():
            step = row.get("trainer/global_step", row.get("_step"))
            for key, value in row.items():
                if (step is not None and not key.startswith("_") and key != "trainer/global_step"
                        and isinstance(value, (int, float)) and not isinstance(value, bool)):
                    history.setdefault(key, []).append((int(step), float(value)))
        runs.append(Run(remote.name, remote.group or group, f"wandb:{remote.path}",
                        dict(remote.config), {k: sorted(v) for k, v in history.items()}))
    if not runs:
        raise ReportError(f"W&B has no run in group {group!r} of project {project!r}")
    return runs


# -- the log-linear fit -------------------------------------------------------------------------

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


# -- rendering ------------------------------------------------------------------------------------

def check_metrics(runs: list[Run], metrics: list[str], fit_metric: str) -> None:
    """One error naming every metric asked for that some run lacks."""
    problems = []
    for metric in metrics:
        missing = [r.name for r in runs if not r.history.get(metric)]
        if missing:
            problems.append(f"{metric!r} is missing from {len(missing)} run(s): {', '.join(missing)}")
    oe_runs = [r for r in runs if r.modulus is not None]
    missing = [r.name for r in oe_runs if not r.history.get(fit_metric)]
    if missing:
        problems.append(f"the fit's metric {fit_metric!r} is missing from: {', '.join(missing)}")
    if problems:
        available = sorted({k for r in runs for k in r.history})
        raise ReportError("; ".join(problems) + f". Metrics these runs have: {', '.join(available)}")


def plot_group_curves(runs: list[Run], metrics: list[str], out_dir: Path) -> dict[str, Path]:
    """``curves_<group>.png`` per W&B group: one panel per metric, one line per run."""

    written = {}
    for group in sorted({r.group for r in runs}):
        members = sorted((r for r in runs if r.group == group),
                         key=lambda r: (r.modulus or 0, r.name))
        curves = {metric: {run.name: [tuple(np.asarray(a) for a in zip(*run.history[metric]))]
                           for run in members if run.history.get(metric)}
                  for metric in metrics}
        curves = {metric: by_run for metric, by_run in curves.items() if by_run}
        slug = re.sub(r"[^A-Za-z0-9_.+=-]+", "-", group)
        written[group] = plot_curves(curves, out_dir / f"curves_{slug}.png", title=group)
    return written


def plot_log_linear(m: list[int], loss: list[float], fit: LogLinearFit, metric: str,
                    out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.log10(np.asarray(m, dtype=float))
    grid = np.linspace(x.min() - 0.1, x.max() + 0.1, 50)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(x, loss, color="C0", zorder=3, label="runs")
    ax.plot(grid, fit.intercept + fit.slope * grid, color="C0",
            label=f"fit: {fit.intercept:.4f} {fit.slope:+.4f} log10(m)")
    # The paper's slope through the centre of our points: its loss scale (OLMoE) is not ours.
    centre_x, centre_y = float(x.mean()), float(np.mean(loss))
    ax.plot(grid, centre_y + PAPER_SLOPE * (grid - centre_x), "--", color="C3",
            label=f"paper's slope {PAPER_SLOPE} per decade")
    ax.set_xlabel("log10(m)")
    ax.set_ylabel(f"final {metric}")
    ax.set_title("loss against Over-Encoding table size m", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
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
                "`callbacks.downstream.DownstreamEvaluation` callback, or run `python -m oe.evaluate`)."]
    names = [k.removeprefix("downstream/") for k in keys]
    lines = ["| run | group | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(keys)]
    for run in runs:
        cells = []
        for key in keys:
            value, err = run.final(key), run.final(key + "_stderr")
            cells.append(_fmt(value) + (f" ± {_fmt(err)}" if value is not None and err is not None else ""))
        lines.append(f"| {run.name} | {run.group} | " + " | ".join(cells) + " |")
    return lines


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


def render(runs: list[Run], out: Path, metrics: list[str], fit_metric: str, window: int,
           extra_metrics: list[str] = ()) -> Path:
    """``metrics`` must be logged by every run; ``extra_metrics`` are shown when some run has them."""
    check_metrics(runs, metrics, fit_metric)
    metrics = metrics + [m for m in extra_metrics
                         if m not in metrics and any(r.history.get(m) for r in runs)]
    runs = sorted(runs, key=lambda r: (r.group, r.modulus or 0, r.name))
    out.mkdir(parents=True, exist_ok=True)
    curve_files = plot_group_curves(runs, metrics, out)
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
    md += ["", "## Curves", ""]
    for group, path in curve_files.items():
        md += [f"Group `{group}`:", "", f"![curves of {group}]({path.name})", ""]
    md += ["## At equal tokens", "", *equal_tokens_table(runs, metrics), ""]
    md += ["## Loss against log10(m)", ""]
    oe_runs = [r for r in runs if r.modulus is not None]
    ms = sorted({r.modulus for r in oe_runs})
    if len(ms) >= 2:
        m = [r.modulus for r in oe_runs]
        loss = [r.final(fit_metric, window) for r in oe_runs]
        fit = fit_log_linear(m, loss)
        plot_log_linear(m, loss, fit, fit_metric, out / "loglinear.png")
        ci = (f"[{fit.ci95[0]:+.4f}, {fit.ci95[1]:+.4f}]" if fit.n > 2
              else "not defined with two runs")
        md += [f"Least squares over {fit.n} Over-Encoding run(s), final `{fit_metric}`"
               + (f" (mean of the last {window} logged values)" if window > 1 else "") + ":", "",
               f"    {fit_metric} = {fit.intercept:.4f} {fit.slope:+.4f} log10(m)", "",
               "| | slope per decade of m | 95% interval | per 4x m |", "|---|---|---|---|",
               f"| these runs | {fit.slope:+.4f} | {ci} | {fit.slope * math.log10(4):+.4f} |",
               f"| paper (OLMoE-1.3B, N=2, k=1, m 2e4..1.28e7) | {PAPER_SLOPE:+.4f} | – | "
               f"{PAPER_SLOPE * math.log10(4):+.4f} |", "",
               "![log-linear fit](loglinear.png)", ""]
    else:
        md += [f"Not fitted: it needs Over-Encoding runs at two or more values of m "
               f"(these runs have {ms or 'none'}).", ""]
    md += ["## Downstream", "", *downstream_table(runs), ""]
    report = out / "report.md"
    report.write_text("\n".join(md))
    return report

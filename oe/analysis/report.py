"""What ``oe report`` (``oe.cli.report``) reads, fits and writes.

- Reading (``read_run``): every layout the project writes, as ``Run``: a run folder of ``oe.fit``
  (``csv/version_*/metrics.csv`` with its ``config.yaml``, or its offline W&B runs when there is no
  CSV), a folder holding ``metrics.csv`` itself (``docs/evidence/cfg3f_gpu/*``), a lone CSV file
  (``docs/evidence/cfg3f_cpu_tiny/*.csv``), each with the results ``oe.evaluate`` wrote into it
  (``eval/*.json``, as ``downstream/<task>/<metric>`` at the checkpoint's step); a folder of
  such runs counts as all of them; or every run of a W&B group online.
- The fit: least squares of the loss against log10 of the rows per table, per group of runs that
  differ only in m (same orders, k and backbone size), at the largest step every run of the group
  reached, with the slope's 95% interval from Student's t (``fit_log_linear``), beside the paper's
  slope b = -0.0256 (OLMoE-1.3B, Huang et al. 2025). ``oe.experiments.table_scaling`` takes its
  slopes from it too.
- Writing: the curves of each group (``oe.analysis.plot``: seeds as bands, against steps or
  tokens), ``loglinear.png`` and ``report.md`` (the runs, the fit, the comparison at equal tokens,
  the downstream table).
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
from oe.analysis.plot import (History, csv_version, default_label, merge_csv_versions,
                              plot_curves, read_csv_history)

PAPER_SLOPE = -0.0256  # per decade of m: L = 2.6754 - 0.0256 log10(m), OLMoE-1.3B, N=2, k=1
PAPER_INTERCEPT = 2.6754
# The default metrics, each shown when some run logged it: losses, then cfg3f's excess loss and
# graded generation; runs without one (Wikitext runs have no val/gen_acc) report "–" there.
DEFAULT_METRICS = ["train/loss", "val/loss", "val/excess_loss", "val/gen_acc", "val/gen_viable_frac"]
TOKENS = "train/tokens"
STEP = "step"


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

    @property
    def label(self) -> str:
        """The run's series in the curves: its name without a seed, so seeds form a band."""
        return default_label(self.name)

    @property
    def fit_group(self) -> str:
        """What the runs of one log-linear fit share: orders, k and backbone size (not m)."""
        model = self.config.get("model") or {}
        over_encoding = model.get("over_encoding") or {}
        orders = over_encoding.get("orders")
        backbone = model.get("backbone") or {}
        size = (f"{backbone.get('n_layer')}x{backbone.get('n_embd')}" if backbone.get("n_layer")
                else next((t.removeprefix("size=") for t in self.config.get("_tags", [])
                           if t.startswith("size=")), "?"))
        return (f"orders={'+'.join(map(str, [1, *sorted(orders)])) if orders else '?'}, "
                f"k={over_encoding.get('k', '?')}, size={size}")

    def final(self, metric: str, window: int = 1, step: int | None = None) -> float | None:
        """Mean of the last ``window`` values of ``metric`` logged at or before ``step`` (default:
        the end); None if there are none."""
        points = [(s, v) for s, v in self.history.get(metric, []) if step is None or s <= step]
        if not points:
            return None
        return float(np.mean([v for _, v in points[-window:]]))

    def curve(self, metric: str, x: str = STEP) -> tuple[np.ndarray, np.ndarray]:
        """(x, values) of ``metric``: x the step, or ``train/tokens`` at that step (linear between
        the steps it was logged at, extended at the rate of its last two points)."""
        points = self.history.get(metric, [])
        steps = np.asarray([s for s, _ in points], dtype=float)
        values = np.asarray([v for _, v in points], dtype=float)
        if x == STEP or not len(steps):
            return steps, values
        logged = self.history.get(TOKENS, [])
        if len(logged) < 2:
            raise ReportError(f"{self.name}: curves against tokens need {TOKENS!r}, which this "
                              f"run logged {len(logged)} time(s); use --x step")
        at, tokens = (np.asarray(c, dtype=float) for c in zip(*logged))
        rate = (tokens[-1] - tokens[-2]) / max(at[-1] - at[-2], 1)
        beyond = tokens[-1] + rate * (steps - at[-1])
        return np.where(steps > at[-1], beyond, np.interp(steps, at, tokens)), values


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


def wandb_run_files(path: Path) -> list[Path]:
    """The W&B run files of a run folder, online (``run-*``) or offline (``offline-run-*``),
    oldest first (their folders are named ``[offline-]run-<date>_<time>-<id>``)."""
    files = (path / "wandb").glob("*run-*/run-*.wandb")
    return sorted(files, key=lambda f: f.parent.name.rsplit("run-", 1)[-1])


def _has_wandb_run(path: Path) -> bool:
    return bool(wandb_run_files(path))


def is_run(path: Path) -> bool:
    """A run as the project writes it: a folder of oe.fit, a folder with its own metrics.csv,
    or one CSV file of metrics."""
    if path.is_file():
        return path.suffix == ".csv"
    return ((path / "csv").is_dir() or (path / "metrics.csv").is_file() or _has_wandb_run(path))


def read_evaluations(path: Path, history: History) -> None:
    """Add ``oe.evaluate``'s results in ``path/eval/*.json`` to ``history``: each task's metrics
    as ``downstream/<task>/<metric>`` at the evaluated checkpoint's step (the run's last step
    when the checkpoint records none)."""
    last = max((s for points in history.values() for s, _ in points), default=0)
    for file in sorted((path / "eval").glob("*.json")):
        try:
            results = json.loads(file.read_text())
            step = results.get("step")
            tasks = results["tasks"]
        except (json.JSONDecodeError, KeyError, AttributeError) as err:
            raise ReportError(f"{file}: not a results file of oe.evaluate ({err})") from None
        for task, metrics in tasks.items():
            for name in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr"):
                if name in metrics:
                    key = f"downstream/{task}/{name}"
                    points = dict(history.get(key, []))
                    points[last if step is None else int(step)] = float(metrics[name])
                    history[key] = sorted(points.items())


def read_run(path: Path) -> Run:
    """One run, from any layout ``is_run`` accepts."""
    path = Path(path)
    if path.is_file():
        history = merge_csv_versions([path])
        if not history:
            raise ReportError(f"{path}: no metrics in this CSV file")
        return Run(path.stem, path.parent.name, str(path), {}, history)
    config: dict = {}
    configs = sorted((path / "csv").glob("version_*/config.yaml"), key=lambda p: csv_version(p.parent))
    if configs:
        config = yaml.safe_load(configs[-1].read_text()) or {}
    if (path / "csv").is_dir():
        history = read_csv_history(path / "csv")
    elif (path / "metrics.csv").is_file():
        history = merge_csv_versions([path / "metrics.csv"])
    else:
        history = {}
    info: dict = {}
    # A run's W&B id may have several files: the training run and evaluations logged into it.
    wandb_files = wandb_run_files(path)
    if wandb_files:
        same_id = [f for f in wandb_files if f.name == wandb_files[-1].name]  # the newest run's
        if history and config:  # the CSV has it all: only the name, group and tags from W&B
            info = read_wandb_info(same_id[0])
        else:
            w_config, w_history, info = read_wandb_run(same_id[0])
            for later in same_id[1:]:
                for key, points in read_wandb_run(later)[1].items():
                    merged = dict(w_history.get(key, []))
                    merged.update(points)
                    w_history[key] = sorted(merged.items())
            config = config or w_config
            history = history or w_history
        config.setdefault("_tags", info.get("tags", []))
    read_evaluations(path, history)
    if not history:
        raise ReportError(f"{path}: no metrics (neither csv/version_*/metrics.csv, metrics.csv nor "
                          f"an offline W&B run with history rows)")
    name = config.get("run_name") or info.get("name") or path.name
    group = config.get("run_group") or info.get("group") or path.parent.name
    return Run(name, group, str(path), config, history)


read_run_dir = read_run  # the older name


def expand_run_dirs(paths: list[Path]) -> list[Path]:
    """Each path is a run (``is_run``), or a folder whose entries are (a sweep's folder, an
    evidence folder of run folders or of CSV files)."""
    found = []
    for path in map(Path, paths):
        if not path.exists():
            raise ReportError(f"{path} does not exist")
        if is_run(path):
            found.append(path)
            continue
        children = sorted(p for p in path.iterdir() if is_run(p)) if path.is_dir() else []
        if not children:
            raise ReportError(f"{path} holds no run (no csv/, metrics.csv, wandb/offline-run-* "
                              f"or *.csv), nor do its entries")
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

"""Reading runs back, in every layout the project writes, as ``Run``s (``oe report``, ``oe plot``).

- A run folder of ``oe.fit``: ``csv/version_*/metrics.csv`` with its ``config.yaml``, or its W&B
  runs (``wandb/[offline-]run-*/run-*.wandb``, read here without W&B's service) when there is no
  CSV, of the id the folder's ``wandb_id`` names (``run_wandb_files``); a folder holding
  ``metrics.csv`` itself (``docs/evidence/cfg3f_gpu/*``); a lone CSV file
  (``docs/evidence/cfg3f_cpu_tiny/*.csv``). Each with the results ``oe.evaluate`` wrote into it
  (``eval/*.json``, as ``downstream/<task>/<metric>`` at the checkpoint's step).
- Discovery: a folder of such runs counts as all of them (``expand_run_dirs``); every run of a
  W&B group online (``read_wandb_group``).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from oe.analysis.plot import History, csv_version, default_label, merge_csv_versions, read_csv_history

TOKENS = "train/tokens"
STEP = "step"
# The run's W&B id, which oe fit writes into the run folder (oe.training.rundir.keep_wandb_run);
# named here again so that reading runs imports no training code (Lightning).
WANDB_ID_FILE = "wandb_id"


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


def run_wandb_files(path: Path) -> list[Path]:
    """The W&B files of run folder ``path``'s own W&B run, oldest first: the training and any
    evaluation logged into it (one id), named by the folder's ``wandb_id``; ReportError if the
    folder holds W&B runs but none of that id."""
    files = wandb_run_files(path)
    id_file = path / WANDB_ID_FILE
    if id_file.is_file():
        run_id = id_file.read_text().strip()
        own = [f for f in files if f.name == f"run-{run_id}.wandb"]
        if files and not own:
            raise ReportError(f"{id_file} names W&B run {run_id!r}, but {path / 'wandb'} holds "
                              f"only {', '.join(sorted({f.name for f in files}))}")
        return own
    # Runs written before oe fit kept the id in the folder: the newest run file's id.
    return [f for f in files if f.name == files[-1].name] if files else []


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
    same_id = run_wandb_files(path)
    if same_id:
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

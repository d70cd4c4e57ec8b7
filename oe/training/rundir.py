"""One predictable folder per run, and resuming a requeued SLURM job from it.

``python -m oe.fit ... --run_dir runs/SWEEP/POINT`` sends everything the run writes there:
``trainer.default_root_dir`` (Lightning's ``hpc_ckpt_*.ckpt`` on a SLURM requeue, ``finished.json``),
every logger's ``save_dir`` (``csv/version_*/metrics.csv``, ``wandb/``) and every ModelCheckpoint's
``dirpath`` (``checkpoints/``). ``--run_name``/``--run_group`` name the W&B run and its group.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger


def _class_of(spec: Namespace) -> type | None:
    module, _, name = str(spec.get("class_path", "")).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def _items(value) -> list[Namespace]:
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, Namespace) and "class_path" in v]


def slurm_job_key() -> str | None:
    """The SLURM job's id (``ARRAYID_TASK`` in an array); it survives a requeue. None outside."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def place_run(trainer: Namespace, run_dir: str | None, name: str | None,
              group: str | None) -> None:
    """Point the trainer config's outputs at ``run_dir`` and name its W&B run (in place)."""
    if run_dir is not None:
        trainer.default_root_dir = run_dir
    for logger in _items(trainer.get("logger")):
        cls, args = _class_of(logger), logger.init_args
        if run_dir is not None and "save_dir" in args:
            args.save_dir = run_dir
        if cls is not None and issubclass(cls, WandbLogger):
            if name is not None:
                args.name = name
            if group is not None:
                args.group = group
            job = slurm_job_key()
            if job is not None and args.get("id") is None:
                # A requeued job keeps its W&B run: same id, and WandbLogger resumes ("allow").
                label = re.sub(r"[^A-Za-z0-9_.-]+", "-", name or args.get("name") or "run")
                args.id = f"{label}-{job}"[-64:]
    for callback in _items(trainer.get("callbacks")):
        cls = _class_of(callback)
        if run_dir is not None and cls is not None and issubclass(cls, ModelCheckpoint):
            callback.init_args.dirpath = str(Path(run_dir) / "checkpoints")


def requeue_resume_path(default_root_dir: str, checkpoint_dirs: list[str]) -> str | None:
    """On a requeued SLURM job (``SLURM_RESTART_COUNT`` > 0): the checkpoint to resume from.

    Lightning's newest ``hpc_ckpt_N.ckpt`` when there is one: it is complete by construction (the
    requeue is only asked for once it is written), whereas the run goes on for a few steps until it
    is killed and may be cut off while writing ``last.ckpt``. Without one (a preemption that sent no
    signal first), each ModelCheckpoint's ``last.ckpt``, the newest first. None outside a requeue.
    """
    if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) < 1:
        return None
    hpc = [(int(m.group(1)), p) for p in Path(default_root_dir).glob("hpc_ckpt_*.ckpt")
           if (m := re.fullmatch(r"hpc_ckpt_(\d+)\.ckpt", p.name))]
    if hpc:
        return str(max(hpc)[1])
    last = [p for p in (Path(d) / "last.ckpt" for d in checkpoint_dirs) if p.exists()]
    return str(max(last, key=lambda p: p.stat().st_mtime)) if last else None

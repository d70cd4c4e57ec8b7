"""One predictable folder per run, and resuming a requeued SLURM job from it.

An oe.fit config states ``run_dir`` (or ``--run_dir runs/SWEEP/POINT`` gives it) and everything the
run writes goes there: ``trainer.default_root_dir`` (Lightning's ``hpc_ckpt_*.ckpt`` on a SLURM
requeue, ``finished.json``), every logger's ``save_dir`` (``csv/version_*/metrics.csv``,
``wandb/``) and every ModelCheckpoint's ``dirpath`` (``<run_dir>/checkpoints``); ``run_dir`` wins
over any of these a config states itself. ``run_name`` (default: the folder's name),
``run_group`` and ``run_project`` name the W&B run, its group and its project.
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


def place_run(config: Namespace, callback_keys: tuple[str, ...] = ("checkpoint",)) -> None:
    """Point a parsed oe.fit config's outputs at its ``run_dir`` and name its W&B run (in place).

    ``callback_keys``: the config's named callback fields; those that are ModelCheckpoints write to
    ``<run_dir>/checkpoints``, as do ModelCheckpoints listed in ``trainer.callbacks``.
    """
    trainer, run_dir = config.trainer, config.get("run_dir")
    name, group, project = config.get("run_name"), config.get("run_group"), config.get("run_project")
    if run_dir is not None:
        trainer.default_root_dir = run_dir
        name = name or Path(run_dir).name
    for logger in _items(trainer.get("logger")):
        cls, args = _class_of(logger), logger.init_args
        if run_dir is not None:
            args.save_dir = run_dir
        elif args.get("save_dir") is None and "save_dir" in args:
            raise ValueError(f"trainer.logger: {logger.class_path} has no save_dir; set run_dir, "
                             f"the folder this run writes to")
        if cls is not None and issubclass(cls, WandbLogger):
            for key, value in (("name", name), ("group", group), ("project", project)):
                if value is not None:
                    args[key] = value
            job = slurm_job_key()
            if job is not None and args.get("id") is None:
                # A requeued job keeps its W&B run: same id, and WandbLogger resumes ("allow").
                label = re.sub(r"[^A-Za-z0-9_.-]+", "-", args.get("name") or "run")
                args.id = f"{label}-{job}"[-64:]
    named = [config[key] for key in callback_keys if config.get(key) is not None]
    for callback in [*_items(trainer.get("callbacks")), *_items(named)]:
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

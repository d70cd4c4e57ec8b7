"""One predictable folder per run, and resuming a requeued SLURM job from it.

An oe.fit config states ``run_dir`` (or ``--run_dir runs/SWEEP/POINT`` gives it) and everything the
run writes goes there: ``trainer.default_root_dir`` (Lightning's ``hpc_ckpt_*.ckpt`` on a SLURM
requeue, ``finished.json``), every logger's ``save_dir`` (``csv/version_*/metrics.csv``,
``wandb/``) and every ModelCheckpoint's ``dirpath`` (``<run_dir>/checkpoints``); ``run_dir`` wins
over any of these a config states itself. ``run_name`` (default: the folder's name),
``run_group`` and ``run_project`` name the W&B run, its group and its project.
Checkpoint names in it are never versioned: ``last.ckpt`` is always the newest save.

A run folder holds one run. A folder that already holds one (a checkpoint, ``finished.json`` or
logged metrics) is refused unless the run resumes it (``--ckpt_path``, ``--resume``: its newest
complete checkpoint, or a requeued SLURM job); a lock file (``.lock``, held while the run lives)
refuses a second run into the same folder at the same time. The folder keeps the run's W&B id
(``wandb_id``), so that a resumed training logs to the same W&B run (``keep_wandb_run``).
"""

from __future__ import annotations

import fcntl
import importlib
import os
import re
import secrets
import string
from pathlib import Path
from typing import IO

from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger

from oe.distributed.checkpoint import checkpoint_problem
from oe.files import write_text_atomically

LOCK_FILE = ".lock"
WANDB_ID_FILE = "wandb_id"  # the run's W&B id: a resumed run logs to the same W&B run


class RunFolderError(ValueError):
    """A run folder that this run may not write to; the message says what to do instead."""


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
            if job is not None and args.get("id") is None and run_dir is None:
                # A requeued job keeps its W&B run: same id, and WandbLogger resumes ("allow").
                # With a run folder, the id stored there does this (``keep_wandb_run``).
                label = re.sub(r"[^A-Za-z0-9_.-]+", "-", args.get("name") or "run")
                args.id = f"{label}-{job}"[-64:]
    named = [config[key] for key in callback_keys if config.get(key) is not None]
    for callback in [*_items(trainer.get("callbacks")), *_items(named)]:
        cls = _class_of(callback)
        if run_dir is not None and cls is not None and issubclass(cls, ModelCheckpoint):
            callback.init_args.dirpath = str(Path(run_dir) / "checkpoints")
            # The folder holds this run alone, so a file already named ``last.ckpt`` there is
            # this run's own, to be replaced; Lightning's counter would fork it into
            # ``last-v1.ckpt`` (a stop's or a resume's save), leaving ``last.ckpt`` stale.
            callback.init_args.enable_version_counter = False


def wandb_loggers(config: Namespace) -> list[Namespace]:
    """The W&B loggers among a parsed oe.fit config's ``trainer.logger``."""
    return [logger for logger in _items(config.trainer.get("logger"))
            if (cls := _class_of(logger)) is not None and issubclass(cls, WandbLogger)]


def new_wandb_id() -> str:
    """A fresh W&B run id: 8 characters of lowercase letters and digits, as W&B makes them."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def keep_wandb_run(config: Namespace, resuming: bool) -> str | None:
    """Give the config's W&B logger the id of the run folder's W&B run (in place), so that a
    resumed training continues its W&B run (WandbLogger resumes with ``resume="allow"``, online
    and offline) instead of starting a second one. Returns the id, None without a W&B logger or
    a run folder.

    The id lives in ``<run_dir>/wandb_id``. A fresh start takes a new id (or the one its config
    states) and writes it there; a resumed run reads it back (a stated id wins). Only the process
    that starts the run writes the file; the ranks it starts read it.
    """
    root = config.trainer.get("default_root_dir")
    loggers = wandb_loggers(config)
    if root is None or not loggers:
        return None
    stored_file = Path(root) / WANDB_ID_FILE
    stored = stored_file.read_text().strip() if stored_file.is_file() else ""
    stated = loggers[0].init_args.get("id")
    if stated is not None:
        run_id = str(stated)
    elif stored and (resuming or not launching_process()):
        run_id = stored
    else:
        run_id = new_wandb_id()
    if launching_process() and run_id != stored:
        write_text_atomically(stored_file, f"{run_id}\n")
    for logger in loggers:
        logger.init_args.id = run_id
    return run_id


def checkpoint_files(default_root_dir: str | Path, checkpoint_dirs: list[str]) -> list[Path]:
    """A run's checkpoint files, the newest first: Lightning's ``hpc_ckpt_N.ckpt`` and every
    ``.ckpt`` in its checkpoint folders (files still being written have hidden ``.tmp`` names)."""
    found = {p for p in Path(default_root_dir).glob("hpc_ckpt_*.ckpt") if p.is_file()}
    for folder in checkpoint_dirs:
        found |= {p for p in Path(folder).glob("*.ckpt") if p.is_file()}
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def is_complete(path: Path) -> bool:
    """Whether checkpoint ``path`` can be read and, with sharded tables, its table folder too."""
    return checkpoint_problem(path) is None


def newest_checkpoint(default_root_dir: str | Path, checkpoint_dirs: list[str]) -> Path | None:
    """The run's newest complete checkpoint (saves are atomic, so normally simply the newest)."""
    return next((p for p in checkpoint_files(default_root_dir, checkpoint_dirs) if is_complete(p)),
                None)


def requeue_resume_path(default_root_dir: str, checkpoint_dirs: list[str]) -> str | None:
    """On a requeued SLURM job (``SLURM_RESTART_COUNT`` > 0): the checkpoint to resume from.

    The newest complete one of Lightning's ``hpc_ckpt_N.ckpt`` (written on SIGUSR1 before the
    requeue) and the checkpoint folders' files (``last.ckpt``, also written by a clean stop on
    the SIGTERM that follows); every save is atomic, so a later file is never a cut-off one.
    None outside a requeue, or when the run has no checkpoint yet.
    """
    if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) < 1:
        return None
    newest = newest_checkpoint(default_root_dir, checkpoint_dirs)
    return str(newest) if newest is not None else None


def launching_process() -> bool:
    """Whether this process starts the run (global rank 0), not a rank started for it."""
    return all(os.environ.get(name, "0") == "0"
               for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def run_contents(default_root_dir: str | Path, checkpoint_dirs: list[str]) -> list[str]:
    """What in a run folder shows that a run was there: results, checkpoints, logged metrics."""
    root = Path(default_root_dir)
    found = [p for p in [root / "finished.json"] if p.is_file()]
    found += checkpoint_files(root, checkpoint_dirs)
    found += sorted(root.glob("*/version_*/metrics.csv"))
    return [str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in found]


def refuse_used_folder(default_root_dir: str | Path, checkpoint_dirs: list[str]) -> None:
    """RunFolderError when the folder already holds a run: resume it or choose another folder."""
    root = Path(default_root_dir)
    contents = run_contents(root, checkpoint_dirs)
    if not contents:
        return
    shown = ", ".join(contents[:3]) + (f" and {len(contents) - 3} more" if len(contents) > 3 else "")
    newest = newest_checkpoint(root, checkpoint_dirs)
    if newest is None:
        raise RunFolderError(
            f"run folder {root} already holds a run ({shown}) without a complete checkpoint; it "
            f"cannot be resumed: give another --run_dir, or remove {root} to start it again"
        )
    raise RunFolderError(
        f"run folder {root} already holds a run ({shown}); resume it with --resume true (its newest "
        f"complete checkpoint, {newest}) or --ckpt_path FILE, or give another --run_dir"
    )


def lock_run_folder(default_root_dir: str | Path) -> IO[str]:
    """Hold the run folder's lock for as long as the returned file stays open (this process).

    RunFolderError when another live run holds it, or when the folder cannot be written.
    """
    root = Path(default_root_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle = open(root / LOCK_FILE, "a+")
    except OSError as err:
        raise RunFolderError(f"run folder {root} cannot be written ({err.strerror}); give a "
                             f"writable --run_dir") from err
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as err:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RunFolderError(f"run folder {root} is in use by another run (process {holder}, "
                             f"lock {root / LOCK_FILE}); wait for it to end or give another "
                             f"--run_dir") from err
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle

"""oe.training.rundir: where a run's outputs go, and which checkpoint a requeued SLURM job resumes from."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
from jsonargparse import Namespace

from oe.training.rundir import (RunFolderError, keep_wandb_run, lock_run_folder,
                                newest_checkpoint, place_run, refuse_used_folder,
                                requeue_resume_path)


def fit_config(run_dir: str | None, name: str | None = None, group: str | None = None,
               project: str | None = None) -> Namespace:
    trainer = Namespace(
        default_root_dir="runs/x",
        logger=[
            Namespace(class_path="lightning.pytorch.loggers.CSVLogger",
                      init_args=Namespace(save_dir="runs/x", name="csv")),
            Namespace(class_path="oe.training.wandb_logger.AutoWandbLogger",
                      init_args=Namespace(save_dir="runs/x", name="x", group="g", id=None)),
        ],
        callbacks=[
            Namespace(class_path="lightning.pytorch.callbacks.ModelCheckpoint",
                      init_args=Namespace(dirpath="runs/x/listed")),
            Namespace(class_path="callbacks.generation.GenerationAccuracy",
                      init_args=Namespace(num_samples=8)),
        ],
    )
    return Namespace(
        trainer=trainer, run_dir=run_dir, run_name=name, run_group=group, run_project=project,
        checkpoint=Namespace(class_path="lightning.pytorch.callbacks.ModelCheckpoint",
                             init_args=Namespace(dirpath="runs/x/checkpoints")),
    )


def test_place_run_moves_every_output_and_names_the_wandb_run(monkeypatch):
    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(var, raising=False)
    config = fit_config("runs/sw/m=7", "m=7", "sw", "p")
    place_run(config)
    trainer = config.trainer
    assert trainer.default_root_dir == "runs/sw/m=7"
    assert [lg.init_args.save_dir for lg in trainer.logger] == ["runs/sw/m=7"] * 2
    wandb = trainer.logger[1].init_args
    assert (wandb.name, wandb.group, wandb.project, wandb.id) == ("m=7", "sw", "p", None)
    checkpoints = str(Path("runs/sw/m=7") / "checkpoints")
    assert config.checkpoint.init_args.dirpath == checkpoints
    assert trainer.callbacks[0].init_args.dirpath == checkpoints  # listed ones move too
    assert trainer.callbacks[1].init_args == Namespace(num_samples=8)


def test_the_wandb_run_is_named_after_the_run_folder_by_default(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    config = fit_config("runs/cfg_oe3")
    place_run(config)
    assert config.trainer.logger[1].init_args.name == "cfg_oe3"
    assert config.trainer.logger[1].init_args.group == "g"  # untouched when not given


def test_a_slurm_array_task_keeps_one_wandb_id_across_requeues(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "120")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "118")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    config = fit_config(None, "m=37")
    place_run(config)
    assert config.trainer.logger[1].init_args.id == "m-37-118_2"
    assert config.trainer.logger[1].init_args.group == "g"  # untouched when not given
    assert config.trainer.default_root_dir == "runs/x"  # no run_dir: the config's own folders
    assert config.checkpoint.init_args.dirpath == "runs/x/checkpoints"


def test_a_logger_without_a_folder_and_no_run_dir_is_refused():
    config = fit_config(None)
    config.trainer.logger[0].init_args.save_dir = None
    with pytest.raises(ValueError, match="CSVLogger has no save_dir; set run_dir"):
        place_run(config)


def _checkpoint(path: Path, step: int, mtime: float | None = None) -> None:
    torch.save({"state_dict": {}, "global_step": step}, path)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def test_requeued_job_resumes_from_the_newest_complete_checkpoint(tmp_path, monkeypatch):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    now = time.time()
    _checkpoint(ckpts / "last.ckpt", 4, now - 30)
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert requeue_resume_path(str(tmp_path), [str(ckpts)]) is None  # a first start: from scratch
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert requeue_resume_path(str(tmp_path), [str(ckpts)]) == str(ckpts / "last.ckpt")
    for n, age in ((2, 20), (10, 10)):
        _checkpoint(tmp_path / f"hpc_ckpt_{n}.ckpt", n, now - age)
    assert requeue_resume_path(str(tmp_path), [str(ckpts)]) == str(tmp_path / "hpc_ckpt_10.ckpt")
    # A clean stop after the SIGUSR1 save wrote last.ckpt later: saves are atomic, so it wins.
    _checkpoint(ckpts / "last.ckpt", 12, now)
    assert requeue_resume_path(str(tmp_path), [str(ckpts)]) == str(ckpts / "last.ckpt")
    # A file that cannot be read is passed over; a hidden temporary one is never a candidate.
    (ckpts / "broken.ckpt").write_bytes(b"x")
    os.utime(ckpts / "broken.ckpt", (now + 5, now + 5))
    _checkpoint(ckpts / ".last.ckpt.123.tmp", 14, now + 5)
    assert newest_checkpoint(tmp_path, [str(ckpts)]) == ckpts / "last.ckpt"


def test_a_used_run_folder_is_refused_with_both_choices(tmp_path):
    ckpts = tmp_path / "checkpoints"
    refuse_used_folder(tmp_path, [str(ckpts)])  # empty: fine
    (tmp_path / "csv" / "version_0").mkdir(parents=True)
    (tmp_path / "csv" / "version_0" / "metrics.csv").write_text("step\n")
    with pytest.raises(RunFolderError, match="without a complete checkpoint; it cannot be resumed"):
        refuse_used_folder(tmp_path, [str(ckpts)])
    ckpts.mkdir()
    _checkpoint(ckpts / "last.ckpt", 4)
    with pytest.raises(RunFolderError, match=r"resume it with --resume .*last.ckpt\) or "
                                             r"--ckpt_path FILE, or give another --run_dir"):
        refuse_used_folder(tmp_path, [str(ckpts)])


def test_a_second_live_run_is_refused_by_the_lock(tmp_path):
    held = lock_run_folder(tmp_path / "run")
    # flock belongs to the open file, so a second opening conflicts even in this process.
    with pytest.raises(RunFolderError, match=f"in use by another run \\(process {os.getpid()}"):
        lock_run_folder(tmp_path / "run")
    held.close()  # the lock ends with its holder
    lock_run_folder(tmp_path / "run").close()
    unwritable = tmp_path / "file"
    unwritable.write_text("")
    with pytest.raises(RunFolderError, match="cannot be written"):
        lock_run_folder(unwritable / "run")


def test_the_run_folder_keeps_its_wandb_id_for_a_resume(tmp_path, monkeypatch):
    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    config = fit_config(str(tmp_path / "run"))
    place_run(config)
    first = keep_wandb_run(config, resuming=False)
    assert (tmp_path / "run" / "wandb_id").read_text().strip() == first
    assert config.trainer.logger[1].init_args.id == first
    resumed = fit_config(str(tmp_path / "run"))
    place_run(resumed)
    assert keep_wandb_run(resumed, resuming=True) == first
    assert resumed.trainer.logger[1].init_args.id == first
    # a fresh start (the folder emptied by hand) is a new W&B run
    again = fit_config(str(tmp_path / "run"))
    place_run(again)
    assert keep_wandb_run(again, resuming=False) not in (first, None)
    # a requeued SLURM job with a run folder keeps the folder's id, not one made of the job's
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    requeued = fit_config(str(tmp_path / "run"))
    place_run(requeued)
    stored = (tmp_path / "run" / "wandb_id").read_text().strip()
    assert keep_wandb_run(requeued, resuming=True) == stored
    # no run folder: nothing stored, the id is the config's (or the SLURM job's)
    loose = fit_config(None)
    loose.trainer.default_root_dir = None
    assert keep_wandb_run(loose, resuming=False) is None

"""oe.training.rundir: where a run's outputs go, and which checkpoint a requeued SLURM job resumes from."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from jsonargparse import Namespace

from oe.training.rundir import place_run, requeue_resume_path


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


def test_requeued_job_prefers_the_newest_hpc_checkpoint(tmp_path, monkeypatch):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    (ckpts / "last.ckpt").write_bytes(b"x")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert requeue_resume_path(str(tmp_path), [str(ckpts)]) is None  # a first start: from scratch
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert requeue_resume_path(str(tmp_path), [str(ckpts)]) == str(ckpts / "last.ckpt")
    for n in (2, 10):
        (tmp_path / f"hpc_ckpt_{n}.ckpt").write_bytes(b"x")
    later = time.time() + 5
    os.utime(ckpts / "last.ckpt", (later, later))  # written after the signal: may be cut off
    assert requeue_resume_path(str(tmp_path), [str(ckpts)]) == str(tmp_path / "hpc_ckpt_10.ckpt")

"""oe.analysis.runs: a run folder's W&B run is the one its ``wandb_id`` names."""

from __future__ import annotations

import pytest
from jsonargparse import Namespace

from oe.analysis.runs import ReportError, read_run, run_wandb_files
from oe.cli.evaluate import training_wandb_run
from oe.training.rundir import keep_wandb_run


def _offline_run(folder, run_id: str, name: str, loss: float) -> None:
    import wandb

    run = wandb.init(dir=str(folder), project="p", group="grp", name=name, id=run_id,
                     config={"model": {"over_encoding": None}})
    run.log({"val/loss": loss, "trainer/global_step": 10})
    run.finish()


def test_the_folders_wandb_id_picks_its_wandb_run_over_a_newer_one(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "run"
    folder.mkdir()
    _offline_run(folder, "aaaa1111", "training", 1.5)
    _offline_run(folder, "zzzz9999", "other", 9.0)  # newer (same second: sorted by id after)
    wandb.teardown()  # the W&B service writes the files' last blocks when it shuts down
    # A run from before the id file was written: the newest W&B run stands for the folder.
    assert [f.name for f in run_wandb_files(folder)] == ["run-zzzz9999.wandb"]
    assert read_run(folder).name == "other"
    # oe fit writes the id into the folder (as for a run whose config states its W&B id)
    config = Namespace(trainer=Namespace(default_root_dir=str(folder), logger=[Namespace(
        class_path="lightning.pytorch.loggers.WandbLogger", init_args=Namespace(id="aaaa1111"))]))
    assert keep_wandb_run(config, resuming=False) == "aaaa1111"
    run = read_run(folder)
    assert (run.name, run.history["val/loss"]) == ("training", [(10, 1.5)])
    assert training_wandb_run(folder).run_id == "aaaa1111"  # oe evaluate logs into the same run
    (folder / "wandb_id").write_text("bbbb2222\n")
    with pytest.raises(ReportError, match=r"wandb_id names W&B run 'bbbb2222', but .* holds only "
                                          r"run-aaaa1111\.wandb, run-zzzz9999\.wandb"):
        read_run(folder)

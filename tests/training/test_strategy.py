"""ShardedTableStrategy: atomic checkpoints of sharded tables (a failed save keeps the previous
pair; a bad pair is one line), and its former class path in saved configs."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

import oe.training.checkpoint_io as checkpoint_io_module
import oe.training.strategy as strategy_module
from oe.distributed.checkpoint import (PAIR_FILE, TABLE_DIR_KEY, CheckpointError,
                                       CheckpointWriteError, check_table_files, read_checkpoint,
                                       table_dir)
from oe.distributed.export import read_tables
from oe.models.embedding import OverEncodingConfig, deferred_ngram_tables
from oe.training.strategy import ShardedTableStrategy
from tests.conftest import tiny_language_model

VOCAB = 11


class _Tokens(L.LightningDataModule):
    def train_dataloader(self) -> DataLoader:
        rows = torch.randint(1, VOCAB, (8, 2, 13), generator=torch.Generator().manual_seed(2))
        return DataLoader([{"input_ids": r} for r in rows], batch_size=None)


def _model():
    with deferred_ngram_tables():
        return tiny_language_model(VOCAB, OverEncodingConfig(orders=[2, 3], k=2, modulus=101,
                                                             shard_tables=True))


class _StopAt(L.Callback):
    """Ends a run after ``step`` steps of its schedule, as a stop would (resumes keep the schedule)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _fit(root: Path, steps: int, ckpt_path: str | None = None,
         stop_at: int | None = None) -> L.Trainer:
    callbacks = [ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, save_top_k=0,
                                 every_n_train_steps=2)] + ([_StopAt(stop_at)] if stop_at else [])
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False,
                        strategy=ShardedTableStrategy(), enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=root, callbacks=callbacks)
    trainer.fit(_model(), datamodule=_Tokens(), ckpt_path=ckpt_path)
    return trainer


def _step(path: Path) -> int:
    return read_checkpoint(path)["global_step"]


def test_a_save_replaces_the_pair_and_leaves_nothing_else(tmp_path) -> None:
    _fit(tmp_path, 4)
    last = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint = read_checkpoint(last)
    assert checkpoint["global_step"] == 4
    folder = table_dir(last)
    assert folder.name == checkpoint[TABLE_DIR_KEY] and folder.name.startswith("last.ckpt.tables.4.")
    assert json.loads((folder / PAIR_FILE).read_text()) == {"checkpoint": "last.ckpt", "global_step": 4}
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt", folder.name]
    assert check_table_files(last, checkpoint) == folder
    read_tables(last)  # the export path reads the recorded folder


@pytest.mark.parametrize("what", ["tables", "main file"])
def test_a_failed_save_keeps_the_previous_checkpoint(what: str, tmp_path, monkeypatch) -> None:
    calls = {"n": 0}
    real = strategy_module.dcp.save if what == "tables" else checkpoint_io_module.torch.save

    def second_fails(*args, **kwargs):
        if what == "main file" and not (isinstance(args[0], dict) and "state_dict" in args[0]):
            return real(*args, **kwargs)  # DCP's own writes of the tables
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    if what == "tables":
        monkeypatch.setattr(strategy_module.dcp, "save", second_fails)
    else:
        monkeypatch.setattr(checkpoint_io_module.torch, "save", second_fails)
    with pytest.raises(CheckpointWriteError, match="No space left on device.*previous last.ckpt is kept"):
        _fit(tmp_path, 6)
    monkeypatch.undo()
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert _step(last) == 2
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt", table_dir(last).name]
    check_table_files(last, read_checkpoint(last))
    _fit(tmp_path / "resumed", 6, ckpt_path=str(last))  # and it resumes


def test_bad_pairs_and_files_are_one_clear_error(tmp_path) -> None:
    _fit(tmp_path, 2)
    last = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint = read_checkpoint(last)
    folder = table_dir(last)
    copy = last.parent / "copy.ckpt"
    shutil.copy(last, copy)  # a copy shares the folder of the same step
    assert check_table_files(copy, read_checkpoint(copy)) == folder
    pair = folder / PAIR_FILE
    written = pair.read_text()
    pair.write_text(json.dumps({"checkpoint": "last.ckpt", "global_step": 4}))
    with pytest.raises(CheckpointError, match="is at step 2, but its table folder .* the pair is mixed"):
        check_table_files(last, checkpoint)
    pair.write_text(written)
    shard = next(folder.glob("*.distcp"))
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="table shard .* is truncated"):
        check_table_files(last, checkpoint)
    shard.unlink()
    with pytest.raises(CheckpointError, match="table shard .* is missing"):
        check_table_files(last, checkpoint)
    shutil.rmtree(folder)
    with pytest.raises(CheckpointError, match="table folder .* is missing"):
        check_table_files(last, checkpoint)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(last.read_bytes()[:1000])
    empty = tmp_path / "empty.ckpt"
    empty.touch()
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    for path, message in [(truncated, "truncated"), (empty, "is empty"),
                          (foreign, "not a Lightning checkpoint"), (text, "not a PyTorch checkpoint"),
                          (tmp_path, "is a directory"), (tmp_path / "none.ckpt", "does not exist")]:
        with pytest.raises(CheckpointError, match=message):
            read_checkpoint(path)


def test_what_a_kill_during_a_save_leaves_is_passed_over_and_cleared(tmp_path) -> None:
    _fit(tmp_path, 4, stop_at=2)
    folder = tmp_path / "checkpoints"
    # A kill in the middle of the next save: its table folder unfinished, its file half written.
    partial = folder / "last.ckpt.tables.4.0123abcd.tmp"
    partial.mkdir()
    (partial / "__0_0.distcp").write_bytes(b"\0" * 100)
    (folder / ".last.ckpt.999.tmp").write_bytes((folder / "last.ckpt").read_bytes()[:500])
    from oe.training.rundir import newest_checkpoint

    assert newest_checkpoint(tmp_path, [str(folder)]) == folder / "last.ckpt"
    _fit(tmp_path, 4, ckpt_path=str(folder / "last.ckpt"))
    assert _step(folder / "last.ckpt") == 4
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", table_dir(folder / "last.ckpt").name]


def test_teardown_of_a_run_that_failed_before_sharding_raises_nothing() -> None:
    # Tables still on the meta device: Lightning's teardown would raise "Cannot copy out of meta
    # tensor" over the error that ended the run.
    from lightning.fabric.plugins.environments import LightningEnvironment
    from lightning.pytorch.accelerators import CPUAccelerator

    model = _model()
    assert any(p.is_meta for p in model.parameters())
    strategy = ShardedTableStrategy(accelerator=CPUAccelerator(),
                                    cluster_environment=LightningEnvironment())
    strategy.connect(model)
    strategy.teardown()
    assert "cpu" not in model.__dict__  # the module's own .cpu is back


def test_the_former_class_path_is_importable_once_the_config_loader_is() -> None:
    """Configs saved before the strategy moved to oe.training name its former path, which
    jsonargparse imports as a module path: in a fresh process, loading the one config loader is
    enough for that path to give this class (a saved config resuming: tests/cli/test_fit.py)."""
    probe = ("import importlib, oe.cli.config, oe.training.strategy as now\n"
             "former = importlib.import_module('oe.distributed.strategy')\n"
             "print(former.ShardedTableStrategy is now.ShardedTableStrategy, sorted(vars(former)))\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).parents[2],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    shown, names = result.stdout.split(" ", 1)
    assert shown == "True"
    assert "ShardedTableStrategy" in names and "AtomicCheckpointIO" not in names  # the class alone

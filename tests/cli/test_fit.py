"""``python -m oe.fit`` end to end: metrics to CSV and offline W&B, a checkpoint, clear errors."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
from dataclasses import asdict, is_dataclass
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from datamodules.cfg import CFGDataModule
from oe.analysis.report import read_wandb_run
from oe.cli import fit_command
from oe.cli.fit import FitCLI
from oe.cli.fit import main as fit_main
from oe.distributed.checkpoint import TABLE_DIR_KEY, TABLE_KEY, check_table_files, read_checkpoint
from oe.distributed.table_state import table_signature
from oe.models.embedding import OverEncodingConfig
from tests.conftest import tiny_language_model

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--trainer.max_steps", "30", "--trainer.val_check_interval", "15",
         "--data.init_args.batch_size", "8", "--data.init_args.val_sentences", "32",
         "--trainer.log_every_n_steps", "5", "--generation.num_samples", "16"]


def _fit(args: list[str], tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["NETRC"] = str(tmp_path / "no-netrc")  # no W&B key: the logger must go offline itself
    return subprocess.run(fit_command(*args), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("config,steps", [("cfg_baseline", 30), ("cfg_oe3", 20)])
def test_quick_run_writes_csv_wandb_and_checkpoint(config, steps, tmp_path):
    run = tmp_path / "run"
    result = _fit(["--config", f"configs/{config}.yaml", "--config", "configs/presets/quick_cfg.yaml",
                   *SMALL, "--trainer.max_steps", str(steps), "--run_dir", str(run)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics_csv = next(run.rglob("metrics.csv"))
    rows = list(csv.DictReader(metrics_csv.open()))
    logged = {k for row in rows for k, v in row.items() if v}
    assert {"train/loss", "val/loss", "val/gen_acc", "val/gen_viable_frac", "val/gen_first_error",
            "val/loss_floor", "val/excess_loss", "lr", "train/tokens_per_s"} <= logged
    for row in (r for r in rows if r.get("val/excess_loss")):
        assert float(row["val/excess_loss"]) == pytest.approx(
            float(row["val/loss"]) - float(row["val/loss_floor"]), abs=1e-5)
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    # Progress, not a single last step: at batch 8 and the quick preset's peak rate (its warm-up
    # ends at the last step here) a step can spike; OE-3's AdamW tables do at step 19.
    assert min(losses[1:]) < losses[0]
    assert (run / "checkpoints" / "last.ckpt").exists(), "no checkpoint in <run_dir>/checkpoints"
    assert json.loads((run / "finished.json").read_text())["global_step"] == steps
    wandb_file = next(run.rglob("offline-run-*/run-*.wandb"))
    _, history, info = read_wandb_run(wandb_file)
    assert {"train/loss", "val/loss", "val/gen_acc"} <= set(history)
    assert any(tag.startswith("kind=") for tag in info["tags"])
    if config == "cfg_oe3":
        assert "ngram/order3/rows_touched" in logged


def test_unknown_key_is_named(tmp_path):
    result = _fit(["--config", "configs/cfg_baseline.yaml", "--model.backbone.n_layers", "3"],
                  tmp_path, timeout=120)
    assert result.returncode != 0
    assert "n_layers" in result.stderr


def test_wrong_type_is_named(tmp_path):
    result = _fit(["--config", "configs/cfg_baseline.yaml", "--data.init_args.batch_size",
                   "many"], tmp_path, timeout=120)
    assert result.returncode != 0 and "batch_size" in result.stderr


def test_missing_config_file(tmp_path):
    result = _fit(["--config", "configs/no_such.yaml"], tmp_path, timeout=120)
    assert result.returncode != 0 and "no_such.yaml" in result.stderr


def test_context_shorter_than_cfg3f_sentences(tmp_path):
    run = tmp_path / "run"
    result = _fit(["--config", "configs/cfg_baseline.yaml", "--model.backbone.block_size", "512",
                   "--run_dir", str(run)], tmp_path, timeout=120)
    longest = CFGDataModule().max_sequence_length  # of the config's data module, as configured
    assert result.returncode == 2
    assert "model.backbone.block_size" in result.stderr and f"up to {longest} tokens" in result.stderr
    assert not (run / "finished.json").exists()


def _written_checkpoint(path: Path, model, **changed_hparams) -> Path:
    """``model`` saved as the CLI saves it (configs as mappings), some hyper-parameters changed."""
    hparams = {k: asdict(v) if is_dataclass(v) else v for k, v in model.hparams.items()}
    for key, value in changed_hparams.items():
        section, _, field = key.partition(".")
        if value is None:
            hparams[section].pop(field)
        else:
            hparams[section][field] = value
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": hparams}
    if model.over_encoding is not None:
        checkpoint[TABLE_KEY] = table_signature(model)
    torch.save(checkpoint, path)
    return path


def test_resume_refuses_a_changed_model_setting_and_reads_new_settings_as_defaults(tmp_path):
    model = tiny_language_model(over_encoding=OverEncodingConfig(orders=[2, 3], modulus=101,
                                                                 shard_tables=False))
    lr = _written_checkpoint(tmp_path / "lr.ckpt", model, **{"optimizer.lr": 0.5})
    with pytest.raises(ValueError, match=r"--model\.optimizer\.lr .*the checkpoint has 0\.5"):
        FitCLI.check_resume(SimpleNamespace(ckpt_path=str(lr), model=model))
    # Written before the hash family and injection layers existed: it trained with their defaults.
    older = _written_checkpoint(tmp_path / "older.ckpt", model,
                                **{"over_encoding.hash": None, "over_encoding.layers": None})
    FitCLI.check_resume(SimpleNamespace(ckpt_path=str(older), model=model))
    gated = tiny_language_model(over_encoding=OverEncodingConfig(orders=[2, 3], modulus=101,
                                                                 shard_tables=False, gate=True))
    with pytest.raises(ValueError, match=r"--model\.over_encoding\.gate True"):
        FitCLI.check_resume(SimpleNamespace(ckpt_path=str(older), model=gated))


class StopAtStep(L.Callback):
    """SIGTERM to this process once ``step`` steps are done: the clean stop a requeue sends."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


TINY_WITH_WANDB = """
trainer:
  accelerator: cpu
  max_steps: 4
  limit_val_batches: 0
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
checkpoint:
  every_n_train_steps: 2
generation: null
ngram_stats: null
model:
  backbone:
    n_layer: 1
    n_embd: 32
    n_head: 2
data:
  init_args:
    batch_size: 4
    train_sentences: 16
    val_sentences: 4
    num_workers: 0
"""


def _tiny_offline_run(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """A run folder and the tiny overlay (W&B offline, no W&B settings from the environment),
    with the working folder at the repository's root."""
    run, config = tmp_path / "run", tmp_path / "tiny.yaml"
    config.write_text(TINY_WITH_WANDB)
    for name in [n for n in os.environ if n.startswith("WANDB_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(ROOT)
    return run, config


def test_a_resumed_run_logs_to_the_same_wandb_run_and_keeps_its_schedule(tmp_path, monkeypatch,
                                                                        capsys):
    run, config = _tiny_offline_run(tmp_path, monkeypatch)
    args = ["--config", "configs/cfg_oe2.yaml", "--config", str(config), "--run_dir", str(run)]
    stop = ["--trainer.callbacks+=tests.cli.test_fit.StopAtStep",
            "--trainer.callbacks.step", "2"]
    assert fit_main([*args, *stop]) == 128 + signal.SIGTERM
    # another max_steps would reshape the cosine schedule mid-run: refused, saying what it does
    assert fit_main([*args, "--resume", "true", "--trainer.max_steps", "8"]) == 2
    error = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("error:"))
    assert ("cosine schedule of 4 steps; this run's would take 8" in error
            and "--trainer.max_steps 4" in error and "learning rate would jump" in error), error
    assert fit_main([*args, "--resume", "true"]) == 0
    stored = (run / "wandb_id").read_text().strip()
    # One folder per process, all the same W&B run. Two processes that start within one second
    # share a folder name, so wandb adds "-1" to the second: the id is read from the run file.
    runs = sorted(run.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) >= 2
    assert {path.name for path in runs} == {f"run-{stored}.wandb"}


def test_a_run_saved_with_the_former_strategy_path_resumes_from_its_config(tmp_path, monkeypatch):
    """A run saved before ShardedTableStrategy moved to oe.training names it
    ``oe.distributed.strategy.ShardedTableStrategy`` in its config.yaml; resumed from that file, it
    runs on that class to its last step."""
    run, config = _tiny_offline_run(tmp_path, monkeypatch)
    stop = ["--trainer.callbacks+=tests.cli.test_fit.StopAtStep", "--trainer.callbacks.step", "2"]
    assert fit_main(["--config", "configs/cfg_oe2.yaml", "--config", str(config),
                     "--run_dir", str(run), *stop]) == 128 + signal.SIGTERM
    saved = run / "csv" / "version_0" / "config.yaml"
    text = saved.read_text()
    assert "class_path: oe.training.strategy.ShardedTableStrategy" in text
    saved.write_text(text.replace("oe.training.strategy.", "oe.distributed.strategy."))
    assert fit_main(["--config", str(saved), "--resume", "true"]) == 0
    assert json.loads((run / "finished.json").read_text())["global_step"] == 4
    # The strategy's own save: the dense file names the table folder every rank wrote.
    last = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 4 and TABLE_KEY in last and TABLE_DIR_KEY in last
    assert check_table_files(run / "checkpoints" / "last.ckpt", last).is_dir()

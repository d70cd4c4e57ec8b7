"""End to end, offline: the Wikitext quick preset trains, validates with the downstream callback
and evaluates from its checkpoint; frozen GPT-2 + hashed tables trains only the tables."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
import yaml

from oe.cli.evaluate import main as evaluate_main
from oe.cli.fit import main as fit_main
from tests.conftest import tiny_gpt2_dir, write_corpus, write_task_files

pytestmark = pytest.mark.slow


def _overlay(tmp_path, data: dict, callbacks: dict) -> str:
    config = {
        "trainer": {
            "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                        "init_args": {"name": "csv"}}],
            "enable_progress_bar": False,
        },
        **callbacks,
        "data": {"init_args": {"block_size": 32, "batch_size": 4, "val_blocks": 4,
                               "num_workers": 0, "cache_dir": str(tmp_path / "cache"), **data}},
    }
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _metrics(run_dir) -> list[dict]:
    (path,) = run_dir.glob("csv/*/metrics.csv")
    return list(csv.DictReader(path.open()))


@pytest.fixture
def offline(monkeypatch, tmp_path):
    for key, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline",
                       "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(key, value)


def test_quick_preset_trains_20_steps_and_evaluates_its_checkpoint(tmp_path, offline):
    files = {"train": write_corpus(tmp_path / "train.txt", 40, seed=0),
             "validation": write_corpus(tmp_path / "valid.txt", 8, seed=1)}
    write_task_files(tmp_path / "tasks", n=6)
    downstream = {"tasks": ["hellaswag", "piqa"], "data_dir": str(tmp_path / "tasks"),
                  "batch_size": 8, "every_n_validations": 1}
    overlay = _overlay(tmp_path, {"data_files": files, "bpe_vocab_size": 300},
                       {"downstream": downstream})
    run = tmp_path / "run"
    code = fit_main(["--config", "configs/wikitext_baseline.yaml", "--config",
                     "configs/presets/wikitext_quick.yaml", "--config", overlay,
                     "--trainer.max_steps", "20", "--trainer.val_check_interval", "10",
                     "--run_dir", str(run)])
    assert code == 0
    assert json.loads((run / "finished.json").read_text())["global_step"] == 20
    rows = _metrics(run)
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert len(val) == 2 and val[1] < val[0] < math.log(300) + 0.5
    accs = [float(r["downstream/hellaswag/acc"]) for r in rows if r.get("downstream/hellaswag/acc")]
    assert len(accs) == 2 and all(round(a * 6) == pytest.approx(a * 6) for a in accs)  # k of 6 items
    assert any(r.get("downstream/piqa/acc_norm_stderr") for r in rows)

    # The checkpoint names its tokenizer: oe.evaluation.scoring needs nothing else.
    out = tmp_path / "results.json"
    code = evaluate_main(["--ckpt", str(run / "checkpoints" / "last.ckpt"), "--tasks",
                          "hellaswag,piqa,storycloze", "--data_dir", str(tmp_path / "tasks"),
                          "--output", str(out)])
    assert code == 0
    results = json.loads(out.read_text())["tasks"]
    assert {t: r["n"] for t, r in results.items()} == {"hellaswag": 6, "piqa": 6, "storycloze": 6}
    assert list(tmp_path.rglob("offline-run-*"))  # and W&B, offline here
    # The callback's figures at step 20 are the CLI's on the same checkpoint.
    assert accs[-1] == pytest.approx(results["hellaswag"]["acc"])
    # Another tokenizer than the training one is refused.
    other = tiny_gpt2_dir(tmp_path / "other")
    assert evaluate_main(["--ckpt", str(run / "checkpoints" / "last.ckpt"), "--tasks", "piqa",
                          "--data_dir", str(tmp_path / "tasks"), "--tokenizer", str(other),
                          "--no_wandb"]) == 2


def test_frozen_gpt2_with_hashed_tables_trains_only_the_tables(tmp_path, offline):
    from safetensors.torch import load_file

    from datamodules.wikitext import WikitextDataModule
    from oe.cli.export import main as export_main
    from oe.models.pretrained import hf_to_ours
    from oe.experiments.table_scaling import frozen_loss

    gpt2 = tiny_gpt2_dir(tmp_path / "gpt2")
    files = {"train": write_corpus(tmp_path / "train.txt", 40, seed=0),
             "validation": write_corpus(tmp_path / "valid.txt", 8, seed=1)}
    data = {"data_files": files, "tokenizer": str(gpt2)}
    overlay = _overlay(tmp_path, data, {"downstream": None})  # no hub data offline
    run = tmp_path / "run"
    code = fit_main(["--config", "configs/wikitext_gpt2_oe.yaml", "--config", overlay,
                     "--model.pretrained", str(gpt2), "--model.over_encoding.modulus", "1009",
                     "--model.over_encoding.table_lr", "0.05", "--trainer.max_steps", "12",
                     "--trainer.val_check_interval", "12", "--run_dir", str(run)])
    assert code == 0
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    state = checkpoint["state_dict"]
    original = hf_to_ours(load_file(str(gpt2 / "model.safetensors")), 2, "test")
    for name, value in original.items():  # the backbone did not move
        assert torch.equal(state[f"model.{name}"], value), name
    # The tables did: the validation loss is below the frozen backbone's own.
    dm = WikitextDataModule(**{**data, "block_size": 32, "batch_size": 4, "val_blocks": 4,
                               "num_workers": 0, "cache_dir": str(tmp_path / "cache")})
    before = frozen_loss(str(gpt2), dm)
    after = float(_metrics(run)[-1]["val/loss"])
    assert after < before - 1e-3
    # Sharded tables: export to one file, then evaluate it with the model's tokenizer.
    write_task_files(tmp_path / "tasks", n=4)
    exported = tmp_path / "exported.ckpt"
    assert export_main([str(run / "checkpoints" / "last.ckpt"), str(exported)]) == 0
    assert evaluate_main(["--ckpt", str(exported), "--tokenizer", str(gpt2), "--tasks", "piqa",
                          "--data_dir", str(tmp_path / "tasks"), "--no_wandb"]) == 0

"""oe table-scaling: the overlay it layers over the Wikitext configs is a valid oe fit config
that sends every output to the run's folder and reads only local data."""

from __future__ import annotations

from pathlib import Path

from oe.cli.config import parse_fit_config
from oe.experiments.table_scaling import OVERLAY, _overlay

ROOT = Path(__file__).resolve().parents[2]


def test_the_overlay_composes_with_the_wikitext_configs(tmp_path):
    data = {"data_files": {"train": str(tmp_path / "train.txt"),
                           "validation": str(tmp_path / "validation.txt")},
            "block_size": 64, "batch_size": 4, "num_workers": 0,
            "cache_dir": str(tmp_path / "cache"), "tokenizer": "bpe", "bpe_vocab_size": 512}
    run = tmp_path / "run"
    overlay = _overlay(run / OVERLAY, data, run)
    config = parse_fit_config(["--config", str(ROOT / "configs/wikitext_baseline.yaml"),
                               "--config", str(ROOT / "configs/presets/wikitext_quick.yaml"),
                               "--config", str(overlay), "--run_dir", str(run)])
    (logger,) = config.trainer.logger
    assert logger.class_path.endswith("CSVLogger") and Path(logger.init_args.save_dir) == run
    assert config.downstream is None  # the tasks would come from the hub
    assert config.checkpoint.init_args.save_last is True
    assert config.data.init_args.data_files == data["data_files"]
    assert config.data.init_args.tokenizer == "bpe"

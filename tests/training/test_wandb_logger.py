"""AutoWandbLogger: the hyper-parameters appear once in the run's W&B config."""

from __future__ import annotations

from oe.training.wandb_logger import AutoWandbLogger


def test_hparams_are_not_logged_again_beside_the_whole_config(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = AutoWandbLogger(offline=True, save_dir=str(tmp_path), project="p")
    try:
        # oe.fit logs the whole resolved config first; Lightning then logs the model's init args.
        logger.experiment.config.update({"model": {"backbone": {"n_layer": 2}}, "data": {},
                                         "trainer": {}})
        logger.log_hyperparams({"backbone": {"n_layer": 2}, "optimizer": "adamw"})
        assert sorted(logger.experiment.config.keys()) == ["data", "model", "trainer"]
    finally:
        logger.experiment.finish()


def test_without_the_whole_config_hparams_are_logged(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = AutoWandbLogger(offline=True, save_dir=str(tmp_path), project="p")
    try:
        logger.log_hyperparams({"optimizer": "adamw"})
        assert logger.experiment.config["optimizer"] == "adamw"
        assert "anonymous" not in logger._wandb_init  # wandb warns about it, to no effect
    finally:
        logger.experiment.finish()

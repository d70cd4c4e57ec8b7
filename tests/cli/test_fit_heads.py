"""End to end: the OT-3 config trains through ``python -m oe.fit`` with its quick preset."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
import torch

from oe.cli import fit_command

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_cfg_ot3_runs_20_steps(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    # Batch 4 instead of the preset's 32 keeps the run short on two shared cores.
    cmd = [*fit_command(),
           "--config", str(ROOT / "configs/cfg_ot3.yaml"),
           "--config", str(ROOT / "configs/presets/quick_cfg.yaml"),
           "--trainer.max_steps", "20", "--trainer.enable_progress_bar", "false",
           "--data.init_args.batch_size", "4", "--data.init_args.num_workers", "0",
           "--run_dir", str(run)]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run / "finished.json").read_text())
    assert summary["global_step"] == 20 and not summary["interrupted"]
    metrics = summary["metrics"]
    # The objective is the next-token loss plus 0.1 times the MTP loss, both finite.
    for name in ("train/loss", "train/loss_mtp", "train/loss_total"):
        assert math.isfinite(metrics[name]), name
    expected = metrics["train/loss"] + 0.1 * metrics["train/loss_mtp"]
    assert math.isclose(metrics["train/loss_total"], expected, rel_tol=1e-4)
    # Next-token loss of a uniform guess over 6 ids is log 6; 20 steps must have moved below it.
    assert metrics["train/loss"] < math.log(6)
    # The checkpoint holds the heads and the config that rebuilds them.
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu",
                            weights_only=False)  # holds pickled config objects; our own file
    assert checkpoint["hyper_parameters"]["heads"]["mtp"]  # a plain dict under LightningCLI
    keys = checkpoint["state_dict"].keys()
    assert {"heads.mtp.project.weight", "heads.mtp.block.attn.qkv.weight"} <= set(keys)

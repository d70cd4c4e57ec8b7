"""Faults injected into real ``oe fit`` runs: kill -9, SIGTERM, a failed write, a reused folder.

After each fault the run either resumes from its newest complete checkpoint with the losses of
an uninterrupted run (bit for bit, as logged) or refuses with one clear line. Runs are tiny
(one layer, sharded OE tables, 40 steps saving every 2) and run side by side where they can, so
that the file stays within its CI budget on two cores. The lock that refuses a second live run
is tested in tests/training/test_rundir.py.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import oe.distributed.strategy as strategy_module
from oe.cli.fit import main as fit_main

ROOT = Path(__file__).resolve().parents[2]
STEPS = 40
FAST = """
trainer:
  devices: {devices}
  accelerator: cpu
  max_steps: {steps}
  val_check_interval: 1000
  limit_val_batches: 0
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  logger:
    - class_path: lightning.pytorch.loggers.CSVLogger
      init_args:
        name: csv
        flush_logs_every_n_steps: 1
checkpoint:
  every_n_train_steps: 2
generation: null
ngram_stats: null
model:
  backbone:
    n_layer: 1
  over_encoding:
    shard_tables: true
data:
  init_args:
    batch_size: 4
    train_sentences: {sentences}
    val_sentences: 8
    num_workers: 0
"""

pytestmark = pytest.mark.slow


def _args(tmp_path: Path, run_dir: Path, devices: int = 1, steps: int = STEPS) -> list[str]:
    config = tmp_path / f"fast_{devices}_{steps}.yaml"
    # The stream is as long as the run, so that a resumed run must count its epoch and size its
    # schedule by the whole stream, not by what is left of it.
    config.write_text(FAST.format(devices=devices, steps=steps, sentences=steps * 4 * devices))
    return ["--config", "configs/cfg_oe3.yaml", "--config", "configs/presets/quick_cfg.yaml",
            "--config", str(config), "--run_dir", str(run_dir)]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    with open(log, "w") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "oe.cli.fit", *args], cwd=ROOT, env=env,
                                stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def _finish(process: subprocess.Popen, log: Path, timeout: float = 240) -> tuple[int, str]:
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    return code, log.read_text()


def _losses(run_dir: Path) -> dict[int, list[str]]:
    """Every logged training loss by step, over all of the folder's CSV versions."""
    logged: dict[int, list[str]] = {}
    for metrics in sorted(run_dir.glob("csv/version_*/metrics.csv")):
        for row in csv.DictReader(metrics.open()):
            if row.get("train/loss"):
                logged.setdefault(int(row["step"]), []).append(row["train/loss"])
    return logged


def _checkpoint_step(run_dir: Path) -> int | None:
    """The step of ``last.ckpt``'s table folder (named ``last.ckpt.tables.<step>.<id>``)."""
    steps = [int(p.name.split(".")[3]) for p in (run_dir / "checkpoints").glob("last.ckpt.tables.*")
             if not p.name.endswith(".tmp")] if (run_dir / "checkpoints").is_dir() else []
    return max(steps) if steps else None


def _wait_for(condition, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, "the run ended before the fault could be injected"
        assert time.time() < deadline, "the run made no progress"
        time.sleep(0.02)


def _assert_same_losses(run_dir: Path, reference: dict[int, list[str]]) -> None:
    logged = _losses(run_dir)
    assert sorted(logged) == list(range(STEPS)), "a step was never trained"
    for step, values in logged.items():
        assert set(values) == set(reference[step]), f"step {step}: {values} vs {reference[step]}"


def test_one_rank_survives_kill_9_and_sigterm_and_refuses_a_reused_folder(tmp_path) -> None:
    rng = random.Random(os.environ.get("OE_FAULT_SEED", "13"))
    ref, run = tmp_path / "ref", tmp_path / "run"
    reference = _start(_args(tmp_path, ref), tmp_path / "ref.log")
    killed = _start(_args(tmp_path, run), tmp_path / "killed.log")
    # kill -9 at a random moment (training or saving) once a first checkpoint exists
    _wait_for(lambda: _checkpoint_step(run) is not None, killed)
    time.sleep(rng.uniform(0.0, 1.0))
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert _finish(reference, tmp_path / "ref.log")[0] == 0
    expected = _losses(ref)

    # resume; meanwhile a run into the finished reference folder is refused
    resumed = _start([*_args(tmp_path, run), "--resume", "true"], tmp_path / "resumed.log")
    reused = _start(_args(tmp_path, ref), tmp_path / "reused.log")
    # SIGTERM during a step, once the resumed run has trained on past its checkpoint
    start = _checkpoint_step(run)
    _wait_for(lambda: max(_losses(run), default=-1) > start + 1, resumed)
    os.kill(resumed.pid, signal.SIGTERM)
    code, text = _finish(resumed, tmp_path / "resumed.log")
    last_line = text.strip().splitlines()[-1]
    assert code == 128 + signal.SIGTERM, text[-3000:]
    assert last_line.startswith("stopped by SIGTERM at step ") and "--resume" in last_line
    stopped_at = int(last_line.split("at step ")[1].split(":")[0])
    assert _checkpoint_step(run) == stopped_at < STEPS
    assert not (run / "finished.json").exists()
    code, text = _finish(reused, tmp_path / "reused.log")
    assert code == 2
    assert (f"run folder {ref} already holds a run" in text and "--resume" in text
            and "--ckpt_path" in text and "another --run_dir" in text)

    code, text = _finish(_start([*_args(tmp_path, run), "--resume", "true"],
                                tmp_path / "last.log"), tmp_path / "last.log")
    assert code == 0, text[-3000:]
    assert json.loads((run / "finished.json").read_text())["global_step"] == STEPS
    _assert_same_losses(run, expected)


@pytest.mark.distributed
def test_two_ranks_resume_exactly_after_kill_9(tmp_path) -> None:
    # The killed run is its own reference: it is killed once it has logged a step past its
    # newest checkpoint, so the resumed run trains that step again.
    rng = random.Random(os.environ.get("OE_FAULT_SEED", "13"))
    run, steps = tmp_path / "run", 16
    killed = _start(_args(tmp_path, run, devices=2, steps=steps), tmp_path / "killed.log")
    target = rng.choice([2, 4, 6, 8])
    _wait_for(lambda: (_checkpoint_step(run) or 0) >= target
              and max(_losses(run), default=-1) >= _checkpoint_step(run), killed)
    os.killpg(killed.pid, signal.SIGKILL)  # every rank at once, as when a node fails
    killed.wait()
    before = _losses(run)
    start = _checkpoint_step(run)
    code, text = _finish(_start([*_args(tmp_path, run, devices=2, steps=steps), "--resume", "true"],
                                tmp_path / "resumed.log"), tmp_path / "resumed.log")
    assert code == 0, text[-3000:]
    logged = _losses(run)
    assert sorted(logged) == list(range(steps))
    again = [step for step, values in logged.items() if len(values) == 2]
    assert again and min(again) == start, (start, again)
    for step in again:
        assert logged[step][0] == logged[step][1] == before[step][0], step


def test_a_failed_write_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch,
                                                                  capsys) -> None:
    run = tmp_path / "run"
    saves = {"n": 0}
    real = strategy_module.dcp.save

    def full_disk_on_the_third_save(*args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(strategy_module.dcp, "save", full_disk_on_the_third_save)
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert fit_main(_args(tmp_path, run, steps=8)) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: could not write the tables of checkpoint {run}/checkpoints"
                            f"/last.ckpt") and error.endswith("the previous last.ckpt is kept")
    assert _checkpoint_step(run) == 4
    monkeypatch.setattr(strategy_module.dcp, "save", real)
    assert fit_main([*_args(tmp_path, run, steps=8), "--resume", "true"]) == 0
    assert json.loads((run / "finished.json").read_text())["global_step"] == 8

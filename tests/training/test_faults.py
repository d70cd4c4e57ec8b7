"""Faults injected into real ``oe fit`` runs: kill -9, SIGTERM (also before the first save, twice,
during validation), a failed write, a reused folder.

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

import oe.training.strategy as strategy_module
from oe.cli import fit_command
from oe.cli.fit import main as fit_main
from oe.training.rundir import is_complete
from tests.conftest import file_size_limit, full_disk

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
        return subprocess.Popen(fit_command(*args), cwd=ROOT, env=env,
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


def _checkpoint_names(run_dir: Path) -> list[str]:
    """The checkpoint files of the run: one ``last.ckpt``, never a versioned fork of it."""
    return sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))


class Reference:
    """The uninterrupted run, started once for the file and waited for when its losses are due."""

    def __init__(self, tmp_path: Path) -> None:
        self.folder, self.log = tmp_path / "ref", tmp_path / "ref.log"
        self.process = _start(_args(tmp_path, self.folder), self.log)
        self._losses: dict[int, list[str]] | None = None

    def losses(self) -> dict[int, list[str]]:
        if self._losses is None:
            code, text = _finish(self.process, self.log)
            assert code == 0, text[-3000:]
            self._losses = _losses(self.folder)
        return self._losses


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    started = Reference(tmp_path_factory.mktemp("reference"))
    yield started
    if started.process.poll() is None:
        os.killpg(started.process.pid, signal.SIGKILL)


def _assert_same_losses(run_dir: Path, reference: dict[int, list[str]]) -> None:
    logged = _losses(run_dir)
    assert sorted(logged) == list(range(STEPS)), "a step was never trained"
    for step, values in logged.items():
        assert set(values) == set(reference[step]), f"step {step}: {values} vs {reference[step]}"


def test_one_rank_survives_kill_9_and_sigterm_and_refuses_a_reused_folder(tmp_path,
                                                                          reference) -> None:
    rng = random.Random(os.environ.get("OE_FAULT_SEED", "13"))
    ref, run = reference.folder, tmp_path / "run"
    killed = _start(_args(tmp_path, run), tmp_path / "killed.log")
    # kill -9 at a random moment (training or saving) once a first checkpoint exists
    _wait_for(lambda: _checkpoint_step(run) is not None, killed)
    time.sleep(rng.uniform(0.0, 1.0))
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    expected = reference.losses()

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
    assert _checkpoint_names(run) == ["last.ckpt"]
    assert not (run / "finished.json").exists()
    code, text = _finish(reused, tmp_path / "reused.log")
    assert code == 2
    assert (f"run folder {ref} already holds a run" in text and "--resume" in text
            and "--ckpt_path" in text and "another --run_dir" in text)

    code, text = _finish(_start([*_args(tmp_path, run), "--resume", "true"],
                                tmp_path / "last.log"), tmp_path / "last.log")
    assert code == 0, text[-3000:]
    assert json.loads((run / "finished.json").read_text())["global_step"] == STEPS
    assert _checkpoint_names(run) == ["last.ckpt"] and _checkpoint_step(run) == STEPS
    _assert_same_losses(run, expected)


def test_a_stop_before_the_first_save_resumes_to_the_end(tmp_path, reference) -> None:
    # Lightning's own end-of-training save would fork last-v1.ckpt with the epoch marked done,
    # and the resume would end at once as finished.
    run = tmp_path / "run"
    args = [*_args(tmp_path, run), "--checkpoint.every_n_train_steps", "1000"]
    stopped = _start(args, tmp_path / "stopped.log")
    _wait_for(lambda: max(_losses(run), default=-1) >= 2, stopped)
    os.kill(stopped.pid, signal.SIGTERM)
    code, text = _finish(stopped, tmp_path / "stopped.log")
    assert code == 128 + signal.SIGTERM, text[-3000:]
    assert _checkpoint_names(run) == ["last.ckpt"] and _checkpoint_step(run) < STEPS
    code, text = _finish(_start([*args, "--resume", "true"], tmp_path / "resumed.log"),
                         tmp_path / "resumed.log")
    assert code == 0, text[-3000:]
    assert json.loads((run / "finished.json").read_text())["global_step"] == STEPS
    assert _checkpoint_names(run) == ["last.ckpt"] and _checkpoint_step(run) == STEPS
    _assert_same_losses(run, reference.losses())


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


def _assert_kept_after_a_failed_save(run: Path, err: str) -> None:
    """One line naming the checkpoint, the step-2 pair complete, nothing half-written left."""
    assert "Traceback" not in err, err[-3000:]
    error = err.strip().splitlines()[-1]
    assert error.startswith("error: could not write ") and f"{run}/checkpoints/last.ckpt" in error
    assert error.endswith("; the previous last.ckpt is kept"), error
    left = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert left[0] == "last.ckpt" and len(left) == 2 and not any("tmp" in n for n in left), left
    assert is_complete(run / "checkpoints" / "last.ckpt") and _checkpoint_step(run) == 2


@pytest.mark.parametrize("free_after_first_save", ["under_the_tables", "under_the_file"])
def test_a_full_disk_keeps_the_previous_checkpoint(free_after_first_save, tmp_path, monkeypatch,
                                                   capsys) -> None:
    # The first save (step 2: a 0.54 MB table folder, a 4.2 MB file) fits; the second does not,
    # either in the table folder (DCP's CheckpointException) or in the file (torch's RuntimeError).
    size = {"under_the_tables": 5_000_000, "under_the_file": 7_300_000}[free_after_first_save]
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with full_disk(tmp_path / "disk", size) as disk:
        run = disk / "run"
        assert fit_main(_args(tmp_path, run, steps=4)) == 1
        _assert_kept_after_a_failed_save(run, capsys.readouterr().err)


def test_a_file_size_limit_fails_the_first_save_cleanly(tmp_path, monkeypatch, capsys) -> None:
    # RLIMIT_FSIZE fails the 4.2 MB file, wherever mounting a small disk is not permitted.
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = tmp_path / "run"
    with file_size_limit(2_000_000):
        assert fit_main(_args(tmp_path, run, steps=4)) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    error = err.strip().splitlines()[-1]
    assert error.startswith(f"error: could not write checkpoint {run}/checkpoints/last.ckpt: "
                            f"") and "File too large" in error, error
    assert list((run / "checkpoints").iterdir()) == []  # the table folder went with the file


def test_a_second_signal_ends_the_run_at_once(tmp_path) -> None:
    # Two signals within one long call are told apart in tests/training/test_stops.py.
    run = tmp_path / "run"
    process = _start(_args(tmp_path, run), tmp_path / "run.log")
    _wait_for(lambda: (_checkpoint_step(run) or 0) >= 2, process)
    # Ctrl-C held down: signals 50 ms apart (two sent at once may reach the process as one; the
    # kernel does not queue them). The first asks for a clean stop, a later one ends it at once.
    deadline = time.time() + 20
    while process.poll() is None and time.time() < deadline:
        os.kill(process.pid, signal.SIGINT)
        time.sleep(0.05)
    code, text = _finish(process, tmp_path / "run.log", timeout=20)
    assert code == -signal.SIGINT, text[-3000:]
    assert "stopped by" not in text and is_complete(run / "checkpoints" / "last.ckpt")


def test_a_stop_during_validation_exits_within_seconds(tmp_path) -> None:
    # The paper's generation check (10,000 samples, 500 at a time) takes minutes on a CPU; a
    # stop signal ends it within a decoding step, then the run saves after one more step.
    run = tmp_path / "run"
    args = [*_args(tmp_path, run), "--trainer.val_check_interval", "4",
            "--trainer.limit_val_batches", "2", "--generation.num_samples", "10000",
            "--generation.batch_size", "500"]
    process = _start(args, tmp_path / "run.log")
    _wait_for(lambda: max(_losses(run), default=-1) >= 3, process)
    time.sleep(2.0)  # well into the sampling
    signalled = time.time()
    os.kill(process.pid, signal.SIGTERM)
    code, text = _finish(process, tmp_path / "run.log", timeout=60)
    assert time.time() - signalled < 10, text[-3000:]
    assert code == 128 + signal.SIGTERM, text[-3000:]
    assert text.strip().splitlines()[-1].startswith("stopped by SIGTERM at step 5:")
    assert _checkpoint_names(run) == ["last.ckpt"] and _checkpoint_step(run) == 5
    logged = (run / "csv" / "version_0" / "metrics.csv").read_text()
    assert "val/gen_acc" not in logged.splitlines()[0]  # nothing partial was logged


@pytest.mark.distributed
def test_the_oe_command_trains_on_two_ranks(tmp_path) -> None:
    # Lightning starts the second rank again from sys.argv, which must stay a runnable program.
    program = Path(sys.executable).parent / "oe"
    if not program.is_file():
        pytest.skip(f"the oe command is not installed beside {sys.executable}")
    run, log = tmp_path / "run", tmp_path / "run.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    with open(log, "w") as handle:
        process = subprocess.Popen([str(program), "fit", *_args(tmp_path, run, devices=2, steps=4)],
                                   cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    code, text = _finish(process, log)
    assert code == 0, text[-3000:]
    assert json.loads((run / "finished.json").read_text())["global_step"] == 4

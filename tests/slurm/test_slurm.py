"""The sbatch templates and oe.cli.sweep --submit against a real one-node SLURM started here.

The cluster (Debian's slurm-wlm and munge, installed with apt-get when missing) lives in a private
folder on 127.0.0.1 and is stopped by its pids at the end, even on failure. All three jobs are
submitted at once and run side by side (the node offers 6 CPUs over the machine's cores):
- slurm/fit_1node.sbatch: OE (cfg_oe3 + quick_cfg, shrunk) on 2 tasks, the tables sharded over gloo;
- a 2-point job array from a sweep file, then oe.analysis.report over its run folders;
- a 1-task run that is sent SIGUSR1: Lightning saves hpc_ckpt_1.ckpt and requeues the job, which
  resumes from the newest complete checkpoint (that one, or the last.ckpt of the clean stop on the
  SIGTERM that follows) and finishes.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from oe.distributed.checkpoint import table_dir

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slurm, pytest.mark.slow]

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
         "DEADLINE", "PREEMPTED"}
STEPS = 12
REQUEUE_STEPS = 400
TINY = {  # layered after presets/quick_cfg.yaml: seconds per run instead of minutes
    "trainer": {
        "accelerator": "cpu", "max_steps": STEPS, "val_check_interval": 6, "log_every_n_steps": 2,
        "enable_progress_bar": False,
    },
    "checkpoint": {"every_n_train_steps": 4},
    "generation": {"num_samples": 8, "every_n_validations": 1, "batch_size": 8},
    "model": {"backbone": {"n_layer": 2, "n_head": 2, "n_embd": 32},
              "optimizer": {"warmup_steps": 2}},
    "data": {"init_args": {"batch_size": 4, "train_sentences": 96, "val_sentences": 8,
                           "num_workers": 0}},
}
CPU_JOB = ["--gpus-per-node=0", "--cpus-per-task=1", "--time=00:20:00"]


def _load_local_cluster():
    spec = importlib.util.spec_from_file_location("local_cluster", ROOT / "slurm" / "local_cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def job_states(env: dict, job: str) -> list[dict[str, str]]:
    """``scontrol show job -o`` as dicts: one per job, or per task of an array."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job], env=env, capture_output=True,
                         text=True, check=True).stdout
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if line.strip()]


def wait_final(env: dict, job: str, timeout: float, restarts: int = 0) -> list[dict[str, str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = job_states(env, job)
        if states and all(s["JobState"] in FINAL and int(s["Restarts"]) >= restarts
                          for s in states):
            return states
        time.sleep(2)
    raise TimeoutError(f"job {job} not finished after {timeout:.0f} s: {job_states(env, job)}")


def sbatch(env: dict, *args: str) -> str:
    out = subprocess.run(["sbatch", "--parsable", *args], env=env, cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0]


def task_logs(run_dir: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted((run_dir / "logs").glob("*.log")))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the private SLURM cluster runs its daemons as root (SlurmUser=root)")
    local_cluster = _load_local_cluster()
    root = tmp_path_factory.mktemp("slurm")
    try:
        env = local_cluster.start(root / "cluster", cpus=6)
        env.update(OE_PYTHON=sys.executable, WANDB_MODE="offline", WANDB_SILENT="true",
                   PYTHONPATH=str(ROOT))
        yield env, root
    finally:
        local_cluster.stop(root / "cluster")


@pytest.fixture(scope="module")
def jobs(cluster):
    """Submit the three jobs at once; each test waits for its own."""
    env, root = cluster
    tiny = root / "tiny.yaml"
    tiny.write_text(yaml.safe_dump(TINY))
    sharded = root / "sharded.yaml"  # cfg3f's own tables are plain; these jobs shard them
    sharded.write_text(yaml.safe_dump({"model": {"over_encoding": {"shard_tables": True}}}))
    oe_configs = ["--config", "configs/cfg_oe3.yaml", "--config", "configs/presets/quick_cfg.yaml",
                  "--config", str(tiny), "--config", str(sharded)]
    submitted = {"root": root, "env": env}

    sweep = root / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "slurm_m", "base_configs": ["configs/cfg_oe3.yaml", "configs/presets/quick_cfg.yaml",
                                            str(tiny), str(sharded)],
        "grid": {"model.over_encoding.modulus": [7, 37]}, "overrides": {"seed_everything": 3}}))
    runs = root / "runs"
    out = subprocess.run(
        [sys.executable, "-m", "oe.sweep", "--sweep", str(sweep), "--submit", "--runs-dir",
         str(runs), "--no-check", *[f"--sbatch-arg={a}" for a in CPU_JOB]],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    array_job = re.search(r"submitted array job (\d+)", out.stdout).group(1)
    submitted["array"] = (array_job, runs / "slurm_m")

    fit_dir = root / "fit2"
    submitted["fit2"] = (sbatch(env, *CPU_JOB, "--ntasks-per-node=2",
                                f"--output={root}/fit2-%j.out", "slurm/fit_1node.sbatch",
                                str(fit_dir), *oe_configs), fit_dir)

    requeue_dir = root / "requeue"
    submitted["requeue"] = (sbatch(
        env, *CPU_JOB, "--ntasks-per-node=1", f"--output={root}/requeue-%j.out",
        "slurm/fit_1node.sbatch", str(requeue_dir),
        "--config", "configs/cfg_baseline.yaml", "--config", "configs/presets/quick_cfg.yaml",
        "--config", str(tiny), "--trainer.max_steps", str(REQUEUE_STEPS),
        "--trainer.val_check_interval", "100", "--data.init_args.train_sentences", "100000"),
        requeue_dir)
    return submitted


def test_requeue_on_signal_resumes_from_the_checkpoint(jobs):
    # First: the signal must reach the run before it finishes by itself.
    env, (job, run_dir) = jobs["env"], jobs["requeue"]
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoints" / "last.ckpt").exists():
        assert time.monotonic() < deadline, f"no checkpoint yet: {job_states(env, job)}"
        state = job_states(env, job)[0]
        assert state["JobState"] in ("PENDING", "RUNNING"), f"{state}\n{task_logs(run_dir)}"
        time.sleep(0.5)
    # What SLURM sends before the time limit (--signal=USR1@120), sent now.
    subprocess.run(["scancel", "--signal=USR1", job], env=env, check=True)
    deadline = time.monotonic() + 120
    while True:
        state = job_states(env, job)[0]
        if state["JobState"] == "PENDING" and int(state["Restarts"]) == 1:
            break
        assert state["JobState"] not in FINAL, task_logs(run_dir)[-3000:]
        assert time.monotonic() < deadline, f"not requeued: {state}"
        time.sleep(1)
    # SLURM holds a requeued job back for a while (BeginTime); release it now.
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env, check=True)
    (state,) = wait_final(env, job, timeout=300, restarts=1)
    logs = task_logs(run_dir)
    assert state["JobState"] == "COMPLETED", logs[-3000:]
    hpc = run_dir / "hpc_ckpt_1.ckpt"
    assert "Handling auto-requeue signal" in logs
    saved_at = torch.load(hpc, weights_only=False, map_location="cpu")["global_step"]
    assert 0 < saved_at < REQUEUE_STEPS
    # The requeued job resumes from the newest complete checkpoint: hpc_ckpt_1.ckpt, or the
    # last.ckpt that the SIGTERM ending the first start saved at its next step.
    restored = re.search(r"Restored all states from the checkpoint at (\S+)", logs).group(1)
    assert restored in (str(hpc), str(run_dir / "checkpoints" / "last.ckpt")), restored
    # The second run's CSV starts where the checkpoint left off, and training finished.
    with open(run_dir / "csv" / "version_1" / "metrics.csv", newline="") as f:
        first_step = int(next(csv.DictReader(f))["step"])
    assert saved_at <= first_step <= saved_at + 4
    assert yaml.safe_load((run_dir / "finished.json").read_text())["global_step"] == REQUEUE_STEPS


def test_fit_template_two_tasks_oe_sharded(jobs):
    env, (job, run_dir) = jobs["env"], jobs["fit2"]
    (state,) = wait_final(env, job, timeout=400)
    assert state["JobState"] == "COMPLETED", task_logs(run_dir)[-3000:]
    logs = task_logs(run_dir)
    assert "Starting with 2 processes" in logs and "GLOBAL_RANK: 1, MEMBER: 2/2" in logs
    finished = yaml.safe_load((run_dir / "finished.json").read_text())
    assert finished["global_step"] == STEPS
    assert 0 < finished["metrics"]["val/loss"] < math.log(6)  # better than uniform guessing
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False,
                            map_location="cpu")
    assert checkpoint["global_step"] == STEPS
    assert table_dir(run_dir / "checkpoints" / "last.ckpt").is_dir()  # every rank's rows (DCP)
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert (run_dir / "csv" / "version_0" / "metrics.csv").read_text().count("\n") > STEPS // 2


def test_sweep_array_runs_every_point_and_reports(jobs, tmp_path):
    from oe.analysis.report import read_run_dir, read_wandb_run
    from oe.cli.report import main as report_main

    env, (job, sweep_dir) = jobs["env"], jobs["array"]
    states = wait_final(env, job, timeout=400)
    assert sorted(s["ArrayTaskId"] for s in states) == ["0", "1"]
    assert all(s["JobState"] == "COMPLETED" for s in states), states
    for m in (7, 37):
        run_dir = sweep_dir / f"m={m}"
        assert yaml.safe_load((run_dir / "finished.json").read_text())["global_step"] == STEPS
        run = read_run_dir(run_dir)
        assert (run.name, run.group, run.modulus) == (f"m={m}", "slurm_m", m)
        assert run.config["seed_everything"] == 3
        (wandb_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
        config, _, info = read_wandb_run(wandb_file)
        assert (info["name"], info["group"]) == (f"m={m}", "slurm_m")
        assert {"kind=oe123", "orders=1+2+3", f"m={m}", "k=1", "seed=3"} <= set(info["tags"])
        assert config["model"]["over_encoding"]["modulus"] == m  # the full config is logged
        assert (run_dir / "checkpoints" / "last.ckpt").exists()
    out = tmp_path / "report"
    assert report_main([str(sweep_dir), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "| m=7 | slurm_m | 7 |" in text and "| m=37 | slurm_m | 37 |" in text
    assert (out / "loglinear.png").stat().st_size > 10_000

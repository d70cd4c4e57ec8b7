"""Row-wise sharded n-gram tables on two processes over gloo (Lightning ``devices=2``).

The scenarios run in tests/distributed/sharding_worker.py under torchrun; one module-scoped fixture runs
them in order (1 rank, 2 ranks, 1 rank) and the tests below check what they wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from oe.cli import fit_command
from oe.distributed.checkpoint import table_dir
from oe.distributed.export import read_tables

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "distributed" / "sharding_worker.py"
sys.path.insert(0, str(ROOT / "tests" / "distributed"))

from sharding_worker import make_model, probe_tokens  # noqa: E402

pytestmark = pytest.mark.distributed


def launch(ranks: int, out: Path, *scenarios: str, timeout: int = 300) -> None:
    env = {**os.environ, "TMPDIR": str(out), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={ranks}", str(WORKER), str(out), *scenarios]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sharding")
    launch(1, out, "step", "sgd")
    launch(2, out, "step", "micro", "sgd", f"reload={out}/step_w2.ckpt,rt22", f"reload={out}/step_w1.ckpt,rt12",
           "resume", f"bad={out}/step_w2.ckpt")
    launch(1, out, f"reload={out}/step_w2.ckpt,rt21")
    return out


def unsharded_logits() -> torch.Tensor:
    torch.set_num_threads(1)
    model = make_model().eval()
    with torch.no_grad():
        return model(probe_tokens())


def test_sharded_forward_equals_unsharded_forward(runs: Path) -> None:
    reference = unsharded_logits()
    for world in (1, 2):
        assert torch.equal(torch.load(runs / f"step_w{world}.pt")["before"], reference)


def test_each_rank_holds_about_half_the_rows(runs: Path) -> None:
    tables = make_model().model.embedding.tables
    rows = [json.loads((runs / f"rows_w2_rank{r}.json").read_text()) for r in (0, 1)]
    for t in tables:
        assert rows[0][t.name] + rows[1][t.name] == t.modulus
        assert abs(rows[0][t.name] - rows[1][t.name]) <= 1


def test_one_step_on_two_ranks_matches_one_process_with_the_global_batch(runs: Path) -> None:
    initial = make_model().state_dict()
    one, one_tables = read_tables(runs / "step_w1.ckpt")
    two, two_tables = read_tables(runs / "step_w2.ckpt")
    changed_rows = 0
    for key, rows in one_tables.items():
        if ".tables." not in key:
            continue
        start = initial[key.replace(".tables.", ".")]
        touched_one = (rows != start).any(1).nonzero().flatten()
        touched_two = (two_tables[key] != start).any(1).nonzero().flatten()
        assert torch.equal(touched_one, touched_two), key
        torch.testing.assert_close(two_tables[key], rows, rtol=0, atol=1e-6)
        changed_rows += len(touched_one)
        assert 0 < len(touched_one) < len(rows)  # a sparse update: only rows of the batch
    for key, value in one_tables.items():  # the fused optimiser's state
        torch.testing.assert_close(two_tables[key], value, rtol=1e-5, atol=1e-7)
    # DDP-averaged dense parameters. AdamW's first step moves each weight by about lr * g / |g|,
    # so where a gradient is near zero the order of the reduction shows: a wider tolerance.
    for key, value in one["state_dict"].items():
        torch.testing.assert_close(two["state_dict"][key], value, rtol=1e-4, atol=2e-5)
    assert changed_rows > 0


def test_two_ranks_give_one_process_gradients_and_sgd_table_update(runs: Path) -> None:
    """Gradients, and tables under SGD, change with any scale of the gradient (AdamW's and
    row-wise Adagrad's first updates do not): each rank's share, in micro-batches, divided by
    the global batch's target count and undone of DDP's average, gives one process's values."""
    one_grads = torch.load(runs / "sgd_grads_w1.pt")
    two_grads = torch.load(runs / "sgd_grads_w2.pt")
    assert one_grads.keys() == two_grads.keys() and one_grads
    for key, value in one_grads.items():
        torch.testing.assert_close(two_grads[key], value, rtol=1e-4, atol=1e-7, msg=key)
    initial = make_model(optimizer="sgd").state_dict()
    _, one_tables = read_tables(runs / "sgd_w1.ckpt")
    _, two_tables = read_tables(runs / "sgd_w2.ckpt")
    moved = 0
    for key, rows in one_tables.items():
        if ".tables." in key:
            torch.testing.assert_close(two_tables[key], rows, rtol=1e-5, atol=1e-7, msg=key)
            moved += int((rows != initial[key.replace(".tables.", ".")]).any(1).sum())
    assert moved > 0


def _same_checkpoint(a: Path, b: Path) -> None:
    ckpt_a, tensors_a = read_tables(a)
    ckpt_b, tensors_b = read_tables(b)
    assert tensors_a.keys() == tensors_b.keys()
    for key in tensors_a:
        assert torch.equal(tensors_a[key], tensors_b[key]), key
    for key in ckpt_a["state_dict"]:
        assert torch.equal(ckpt_a["state_dict"][key], ckpt_b["state_dict"][key]), key
    state_a = ckpt_a["optimizer_states"][0]["state"]
    state_b = ckpt_b["optimizer_states"][0]["state"]
    for index in state_a:
        for name, value in state_a[index].items():
            assert torch.equal(value, state_b[index][name]), (index, name)


def test_micro_batches_on_two_ranks_give_the_whole_batch_update(runs: Path) -> None:
    """Each rank's rows one at a time (gradient accumulation, tables updated once, after the
    last micro-batch) give the update of each rank's rows in one pass."""
    whole, whole_tables = read_tables(runs / "step_w2.ckpt")
    micro, micro_tables = read_tables(runs / "micro_w2.ckpt")
    for key, value in whole_tables.items():
        torch.testing.assert_close(micro_tables[key], value, rtol=1e-5, atol=1e-6, msg=key)
    for key, value in whole["state_dict"].items():
        torch.testing.assert_close(micro["state_dict"][key], value, rtol=1e-4, atol=2e-5, msg=key)


@pytest.mark.parametrize("source,copy", [("step_w2", "rt22"), ("step_w2", "rt21"),
                                         ("step_w1", "rt12")])
def test_checkpoint_round_trips_are_bit_exact(runs: Path, source: str, copy: str) -> None:
    _same_checkpoint(runs / f"{source}.ckpt", runs / f"{copy}.ckpt")
    assert torch.equal(torch.load(runs / f"{copy}.pt")["after"],
                       torch.load(runs / f"{source}.pt")["after"])


def test_every_rank_writes_its_rows(runs: Path) -> None:
    files = sorted(p.name for p in table_dir(runs / "step_w2.ckpt").glob("*.distcp"))
    assert len(files) == 2


def test_resume_continues_the_loss_curve_exactly(runs: Path) -> None:
    losses = json.loads((runs / "resume.json").read_text())
    assert len(losses["straight"]) == 4
    assert losses["resumed"] == losses["straight"][2:]


def test_checkpoint_of_other_tables_fails_and_changes_nothing(runs: Path) -> None:
    bad = json.loads((runs / "bad.json").read_text())
    assert "modulus: checkpoint 101, model 103" in bad["message"]
    assert bad["unchanged"]
    assert "needs a GPU" in bad["adam"]


TINY_RUN = """
run_dir: {root}
trainer:
  devices: 2
  accelerator: cpu
  max_steps: 2
  val_check_interval: 2
  limit_val_batches: 1
  log_every_n_steps: 1
  enable_progress_bar: false
  logger:
    - class_path: lightning.pytorch.loggers.CSVLogger
      init_args:
        name: csv
checkpoint:
  every_n_train_steps: 2
generation:
  num_samples: 3
  batch_size: 2
model:
  backbone:
    n_layer: 2
  over_encoding:
    shard_tables: true   # cfg3f's own tables are plain; this test is about sharded ones
data:
  init_args:
    batch_size: 4
    train_sentences: 64
    val_sentences: 8
    num_workers: 0
"""


@pytest.mark.slow
def test_oe3_quick_preset_trains_and_resumes_on_two_ranks(tmp_path: Path) -> None:
    root = tmp_path / "run"
    small = tmp_path / "small.yaml"
    small.write_text(TINY_RUN.format(root=root))
    env = {**os.environ, "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    base = [*fit_command(), "--config", "configs/cfg_oe3.yaml",
            "--config", "configs/presets/quick_cfg.yaml", "--config", str(small)]
    # The second run resumes the first's checkpoint on the same schedule (a changed
    # max_steps is refused on resume) and finishes it.
    for extra in ([], ["--ckpt_path", str(root / "checkpoints" / "last.ckpt")]):
        done = subprocess.run(base + extra, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-6000:]
    finished = json.loads((root / "finished.json").read_text())
    assert finished["global_step"] == 2
    first_run = (root / "csv" / "version_0" / "metrics.csv").read_text()
    assert "val/gen_acc" in first_run.splitlines()[0]  # generation ran on the sharded model
    assert len(list(table_dir(root / "checkpoints" / "last.ckpt").glob("*.distcp"))) == 2

"""oe bench faults' judging (its kill -9 runs are the benchmark): a kill counts as resumed exactly
only when the next segment starts at the newest checkpoint's step and logs the reference's losses
bit for bit; the summary's exit status is 0 only then; its runs' overlay is a valid oe fit config."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from oe.bench import faults
from oe.cli.config import parse_fit_config


def _segment(run_dir: Path, version: int, losses: dict[int, str]) -> None:
    folder = run_dir / "csv" / f"version_{version}"
    folder.mkdir(parents=True)
    lines = ["epoch,step,train/loss,lr"] + [f"0,{step},{loss},0.1" for step, loss in losses.items()]
    lines.append("0,99,,0.1")  # a row of other metrics only
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")


# Losses by logged step; a checkpoint at global step N is taken after steps 0..N-1, so the segment
# resumed from it logs from step N on.
REFERENCE = {0: "2.5", 1: "2.25", 2: "2.125", 3: "2.0625"}


def test_a_kill_is_exact_only_if_the_resume_starts_at_its_step_with_the_same_losses(tmp_path):
    run = tmp_path / "run"
    _segment(run, 0, {0: "2.5", 1: "2.25"})  # killed; newest checkpoint at step 2
    _segment(run, 1, {2: "2.125"})  # resumed at 2, killed again before the next save
    _segment(run, 2, {2: "2.125", 3: "2.0625"})  # resumed at 2 again, to the end
    assert faults.segments(run) == [{0: "2.5", 1: "2.25"}, {2: "2.125"}, {2: "2.125", 3: "2.0625"}]
    kills = [{"step": 2, "mixed": False}, {"step": 2, "mixed": False}]
    faults.judge(kills, run, REFERENCE, failed=False)
    assert [(k["resumed_from"], k["exact"]) for k in kills] == [(2, True), (2, True)]

    drifted = tmp_path / "drifted"
    _segment(drifted, 0, {0: "2.5", 1: "2.25"})
    _segment(drifted, 1, {2: "2.1250001", 3: "2.0625"})  # one digit off is not exact
    early = tmp_path / "early"
    _segment(early, 0, {0: "2.5", 1: "2.25", 2: "2.125"})
    _segment(early, 1, {2: "2.125", 3: "2.0625"})  # resumed before the newest checkpoint (3)
    for run_dir, step in ((drifted, 2), (early, 3)):
        kill = [{"step": step, "mixed": False}]
        faults.judge(kill, run_dir, REFERENCE, failed=False)
        assert kill[0]["exact"] is False, run_dir.name
    failed = [{"step": 2, "mixed": False}]
    faults.judge(failed, run, REFERENCE, failed=True)
    assert failed[0]["exact"] is False and failed[0]["resume_failed"] is True


def test_a_run_is_exact_to_the_end_only_if_it_finished_with_every_loss(tmp_path):
    run = tmp_path / "run"
    _segment(run, 0, {0: "2.5", 1: "2.25"})
    _segment(run, 1, {2: "2.125", 3: "2.0625"})
    assert not faults.exact_to_the_end(run, REFERENCE)  # not finished
    (run / "finished.json").write_text(json.dumps({"global_step": 4}))
    assert faults.exact_to_the_end(run, REFERENCE)
    _segment(run, 2, {3: "2.0"})  # a step logged twice with two losses
    assert not faults.exact_to_the_end(run, REFERENCE)


def test_the_summary_fails_on_a_mixed_step_or_an_inexact_resume(tmp_path, capsys):
    args = argparse.Namespace(devices=2, modulus=101, steps=4, every=2, window=1.0, seed=0,
                              out=str(tmp_path / "faults.json"))
    good = {"saving": True, "complete": True, "mixed": False, "exact": True, "step": 2}
    assert faults.summarize([good, dict(good, saving=False)], args, 1, 3.0) == 0
    result = json.loads((tmp_path / "faults.json").read_text())
    assert (result["kills"], result["during_save"], result["resumed_exactly"], result["mixed_steps"]) \
        == (2, 1, 2, 0)
    assert faults.summarize([good, dict(good, mixed=True, complete=False)], args, 1, 3.0) == 1
    assert faults.summarize([good, dict(good, exact=False)], args, 1, 3.0) == 1
    assert "resumed exactly" in capsys.readouterr().out


def test_the_runs_overlay_is_a_valid_fit_config(tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(faults.OVERLAY.format(devices=2, steps=6, every=2, modulus=1009,
                                             sentences=48))
    config = parse_fit_config(faults.fit_args(overlay, tmp_path / "run"))
    assert config.trainer.devices == 2 and config.trainer.max_steps == 6
    assert config.model.over_encoding.modulus == 1009 and config.model.over_encoding.shard_tables
    assert config.checkpoint.init_args.every_n_train_steps == 2
    assert config.trainer.default_root_dir == str(tmp_path / "run")

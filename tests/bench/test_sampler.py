"""``oe bench sampler``: both arms sample the same sentences; the ratio is of its own times."""

from __future__ import annotations

import json

import pytest

from oe.bench import sampler


def test_both_arms_sample_the_same_sentences_and_are_compared(tmp_path, capsys):
    out = tmp_path / "sampler.json"
    assert sampler.main(["--rows", "16", "--rounds", "2", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert len(figures["seconds"]["drop_ended_rows"]) == len(figures["seconds"]["every_row"]) == 2
    medians = figures["median_s"]
    assert figures["every_row_over_drop"] == pytest.approx(medians["every_row"] /
                                                           medians["drop_ended_rows"])
    assert 0 < figures["mean_length"] <= figures["longest"]
    assert "same samples" in capsys.readouterr().out


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(Exception, match="nothing.ckpt"):
        sampler.main(["--checkpoint", str(tmp_path / "nothing.ckpt"), "--rounds", "1"])


def test_counts_below_one_are_refused(capsys):
    with pytest.raises(SystemExit):
        sampler.main(["--rows", "0"])
    assert "--rows must be >= 1" in capsys.readouterr().err

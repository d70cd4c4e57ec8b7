"""oe bench oe: every model of a shape is timed, its ratio that of the same run's baseline, and the
table memory it states that of the tables the model holds (plus one Adagrad float per row)."""

from __future__ import annotations

import json

import pytest

from oe.bench import oe as bench
from oe.models.embedding import OverEncodingConfig
from oe.models.gpt import BackboneConfig
from oe.training.lm import LanguageModel

TINY = BackboneConfig(n_layer=1, n_head=2, n_embd=8, block_size=16)


def test_each_model_is_timed_against_the_baseline_of_its_shape(tmp_path, monkeypatch):
    monkeypatch.setitem(bench.SHAPES, "tiny", (7, TINY, 2, 8))  # vocab, backbone, batch, length
    out = tmp_path / "oe.json"
    assert bench.main(["--shapes", "tiny", "--moduli", "11", "101", "--rounds", "1",
                       "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["benchmark"], result["rounds"]) == ("oe", 1)
    rows = result["rows"]
    assert [r["model"] for r in rows] == ["baseline", "oe3 m=11", "oe3 m=101"]
    baseline = rows[0]["step_s"]
    for row in rows:
        assert row["shape"] == "tiny" and row["step_s"] > 0
        assert row["ratio"] == pytest.approx(row["step_s"] / baseline)
        assert row["tokens_per_s"] == pytest.approx(2 * 8 / row["step_s"])
    assert rows[0]["table_MiB"] == 0.0
    for row, modulus in zip(rows[1:], (11, 101)):
        tables = LanguageModel(vocab_size=7, backbone=TINY, over_encoding=OverEncodingConfig(
            orders=[2, 3], modulus=modulus)).table_parameters()
        floats = sum(p.numel() for p in tables) + sum(p.shape[0] for p in tables)
        assert row["table_MiB"] == pytest.approx(floats * 4 / 2**20)


def test_an_unknown_shape_is_refused():
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--shapes", "gpt5"])
    assert exit_.value.code == 2

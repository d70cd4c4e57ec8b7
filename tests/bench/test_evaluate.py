"""oe bench evaluate: HellaSwag-shaped items, each model timed at each batch size, and its speed-up
that of its own figures at the first batch size."""

from __future__ import annotations

import json

import pytest

from oe.bench import evaluate as bench
from oe.models.gpt import BackboneConfig


def test_items_are_hellaswag_shaped():
    requests = bench.hellaswag_shaped(5, vocab=100, seed=1)
    assert len(requests) == 20
    for item in range(5):
        endings = [r for r in requests if r.item == item]
        assert [r.choice for r in endings] == [0, 1, 2, 3]
        assert len({tuple(r.context) for r in endings}) == 1  # one context, four endings
        assert 30 <= len(endings[0].context) <= 60
        assert all(12 <= len(r.continuation) <= 32 for r in endings)
        assert all(0 < t < 100 for r in endings for t in [*r.context, *r.continuation])


def test_each_model_is_timed_at_each_batch_size(tmp_path, monkeypatch):
    monkeypatch.setitem(bench.PRESETS, "gpt2_small",
                        BackboneConfig(n_layer=1, n_head=2, n_embd=8, block_size=128))
    out = tmp_path / "evaluate.json"
    assert bench.main(["--items", "2", "--batch_sizes", "1", "4", "--modulus", "101",
                       "--threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["requests"] == 8 and result["threads"] == 1
    rows = result["rows"]
    assert [(r["model"], r["batch"]) for r in rows] == [
        ("gpt2-small", 1), ("gpt2-small", 4), ("gpt2-small + OE(2,3)", 1), ("gpt2-small + OE(2,3)", 4)]
    for row in rows:
        assert row["items"] == 2 and row["seconds"] > 0
        assert row["items_per_s"] == pytest.approx(2 / row["seconds"])
        assert row["tokens_per_s"] == pytest.approx(result["tokens"] / row["seconds"])
        first = next(r for r in rows if r["model"] == row["model"] and r["batch"] == 1)
        assert row["speedup_vs_batch_1"] == pytest.approx(row["items_per_s"] / first["items_per_s"])

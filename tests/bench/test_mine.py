"""oe bench mine: a capacity above the corpus's distinct n-grams never prunes (exact counts); a
small one prunes and says by how much a count may be short."""

from __future__ import annotations

import json

import numpy as np
import pytest

from oe.bench.mine import main, zipf_corpus


def test_mining_benchmark_prunes_only_when_the_capacity_is_small(tmp_path):
    out = tmp_path / "mine.json"
    assert main(["--tokens", "20000", "--capacities", "100000", "300", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["orders"], r["capacity"]) for r in rows] == [
        ("2,3", 100000), ("2,3", 300), ("2,3,4,5", 100000), ("2,3,4,5", 300)]
    for row in rows:
        assert row["tokens_per_s"] == pytest.approx(row["tokens"] / row["seconds"])
        if row["capacity"] == 100000:  # 20,000 tokens hold fewer distinct n-grams per order
            assert row["prunes"] == 0 and row["max_undercount"] == 0
        else:
            assert row["prunes"] > 0 and row["max_undercount"] > 0


def test_the_corpus_is_zipfian_and_cut_into_articles():
    tokens, starts = zipf_corpus(50_000, 1000, seed=3)
    assert starts[0] == 0 and (starts[1:] > starts[:-1]).all() and starts[-1] < len(tokens)
    counts = np.sort(np.bincount(tokens, minlength=1000))[::-1]
    assert counts[0] > 10 * counts[99]  # the head of a Zipf law: rank 1 far above rank 100

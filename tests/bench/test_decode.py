"""oe.bench decode: every path is timed at every batch size, its ratios to the baseline those of
the same run's figures."""

from __future__ import annotations

import json

import pytest

from oe.bench.__main__ import available
from oe.bench.decode import main


def test_decode_benchmark_reports_each_path_against_the_baseline(tmp_path, capsys):
    assert "decode" in available()
    out = tmp_path / "decode.json"
    assert main(["--shape", "gpt2_2m4", "--vocab-size", "64", "--modulus", "1009",
                 "--batches", "1", "2", "--new-tokens", "3", "--rounds", "1",
                 "--out", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"1", "2"}
    for by_path in results.values():
        assert set(by_path) == {"baseline", "oe3_tables_on_device", "oe3_tables_in_host_memory"}
        baseline = by_path["baseline"]
        for r in by_path.values():  # each ratio is of this run's own figures, fastest and median
            assert r["tokens_per_s"] >= r["median_tokens_per_s"] > 0 and r["embedding_ms_per_step"] > 0
            assert r["ratio_to_baseline"] == pytest.approx(r["tokens_per_s"] / baseline["tokens_per_s"])
            assert r["median_ratio_to_baseline"] == pytest.approx(
                r["median_tokens_per_s"] / baseline["median_tokens_per_s"])
    assert "oe3_tables_in_host_memory" in capsys.readouterr().out

"""oe.bench decode: every path is timed at every batch size and compared with the baseline."""

from __future__ import annotations

import json

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
        assert by_path["baseline"]["ratio_to_baseline"] == 1.0
        assert all(r["tokens_per_s"] > 0 for r in by_path.values())
    assert "oe3_tables_in_host_memory" in capsys.readouterr().out

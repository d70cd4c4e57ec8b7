"""oe bench shard: the ranks' rows make up each table, the memory it states is that of each rank's
rows, and the time ratios are of the run's own figures; ids that do not split evenly are refused."""

from __future__ import annotations

import json

import pytest

from oe.bench import shard


def test_ids_that_do_not_split_over_the_ranks_are_refused(capsys):
    assert shard.main(["--ids", "300", "--worlds", "1", "2"]) == 2
    assert "--ids must be a multiple of 128" in capsys.readouterr().err


@pytest.mark.distributed
def test_one_and_two_ranks_report_their_rows_and_ratios(tmp_path):
    out = tmp_path / "shard.json"
    assert shard.main(["--m", "64", "1000", "--width", "4", "--ids", "256", "--worlds", "1", "2",
                       "--repeats", "1", "--timeout", "300", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["args"]["m"] == [64, 1000] and "worker" not in result["args"]
    rows = result["rows"]
    assert [(r["ranks"], r["m"]) for r in rows] == [(1, 64), (1, 1000), (2, 64), (2, 1000)]
    for row in rows:
        ranks = row["per_rank"]
        assert sorted(r["rank"] for r in ranks) == list(range(row["ranks"]))
        assert sum(r["rows"] for r in ranks) == row["m"] and min(r["rows"] for r in ranks) > 0
        assert row["table_MiB/rank"] == pytest.approx(max(r["rows"] for r in ranks) * 4 * 4 / 2**20)
        assert row["step_ms"] == pytest.approx(1e3 * ranks[0]["median_s"])
        smallest = next(r for r in rows if r["ranks"] == row["ranks"] and r["m"] == 64)
        assert row["time/time(m=6e+01)"] == pytest.approx(row["step_ms"] / smallest["step_ms"])
        one = next(r for r in rows if r["ranks"] == 1 and r["m"] == row["m"])
        assert row["time/time(1 rank)"] == pytest.approx(row["step_ms"] / one["step_ms"])

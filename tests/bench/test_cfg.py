"""oe bench cfg: the checker accepts every sampled sentence and few mutated ones, and the data
stream's share of a training step is its time over the step's."""

from __future__ import annotations

import json

import pytest

from oe.bench.cfg import main


def test_cfg_benchmark_rows(tmp_path):
    out = tmp_path / "cfg.json"
    assert main(["--sentences", "200", "--batch_sizes", "4", "--max_train_batch", "4",
                 "--out", str(out)]) == 0
    rows = {row["what"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"sampler", "checker, sampled", "checker, 1-symbol mutations",
                         "data stream, batch 4"}
    assert all(row["per_s"] > 0 for row in rows.values())
    assert rows["checker, sampled"]["accepted"] == 1.0  # the grammar's own sentences
    assert rows["checker, 1-symbol mutations"]["accepted"] < 0.5
    stream = rows["data stream, batch 4"]
    assert stream["data/step"] == pytest.approx(stream["data_s"] / stream["train_step_s"])

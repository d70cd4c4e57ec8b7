"""oe bench lm_eval: oe evaluate and lm-eval's ``--model oe`` score the same items of a small
checkpoint to the same acc and acc_norm, and the scoring-only rate is of part of lm-eval's time."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("lm_eval")

from oe.bench import lm_eval as bench  # noqa: E402
from tests.conftest import tiny_gpt2_dir, write_task_files  # noqa: E402
from tests.huggingface.conftest import OE3, save_checkpoint  # noqa: E402


def test_both_ways_score_the_same_items_alike(tmp_path):
    tokenizer_dir = tiny_gpt2_dir(tmp_path / "tokenizer")
    write_task_files(tmp_path / "data", n=6)
    checkpoint = save_checkpoint(tmp_path / "oe3.ckpt", tokenizer_dir / "tokenizer.json", OE3)
    out = tmp_path / "lm_eval.json"
    assert bench.main(["--checkpoint", str(checkpoint), "--data_dir", str(tmp_path / "data"),
                       "--tasks", "hellaswag,piqa", "--batch_size", "4", "--device", "cpu",
                       "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["checkpoint"], result["batch_size"]) == (str(checkpoint), 4)
    assert [row["task"] for row in result["rows"]] == ["hellaswag", "piqa"]
    for row in result["rows"]:
        assert row["items"] == 6
        assert row["acc_oe_evaluate"] == pytest.approx(row["acc_lm_eval"])
        assert row["acc_norm_oe_evaluate"] == pytest.approx(row["acc_norm_lm_eval"])
        assert row["lm_eval_oe_scoring_only_items_per_s"] >= row["lm_eval_oe_items_per_s"] > 0
        assert row["oe_evaluate_items_per_s"] > 0

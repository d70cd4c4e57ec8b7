"""oe bench od: each kind's model is its config's, timed against the baseline of the same run, and
its memory measured by the child run the benchmark starts per kind; bad sizes are refused.

The models are the configs' own with a one-layer, width-16 backbone (each config read once), and
the child runs (``--memory_of KIND``) run in this process, so that the test takes seconds."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess

import pytest

from oe.bench import od


@pytest.fixture
def small_kinds(monkeypatch):
    real, sections = od.model_config, {}

    def small(kind: str, size: str) -> dict:
        if kind not in sections:
            section = real(kind, size)
            sections[kind] = {**section, "backbone": {**section["backbone"], "n_layer": 1,
                                                      "n_head": 2, "n_embd": 16}}
        return sections[kind]

    monkeypatch.setattr(od, "model_config", small)
    return sections


def test_kinds_are_timed_against_the_baseline_and_measured_apart(tmp_path, monkeypatch, small_kinds):
    children, real_run = [], subprocess.run

    def child(command, **kwargs):  # python -m oe.bench od --memory_of KIND ...
        if "--memory_of" not in command:
            return real_run(command, **kwargs)
        children.append(command[4:])
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            assert od.main(command[4:]) == 0
        return subprocess.CompletedProcess(command, 0, printed.getvalue(), "")

    monkeypatch.setattr(od.subprocess, "run", child)
    out = tmp_path / "od.json"
    assert od.main(["--batch", "2", "--repeats", "1", "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {row["kind"]: row for row in result["rows"]}
    assert list(rows) == list(od.KINDS)
    assert [c[c.index("--memory_of") + 1] for c in children] == list(od.KINDS)
    assert all(c[c.index("--batch") + 1] == "2" for c in children)
    base = rows["baseline"]
    for kind, row in rows.items():
        assert row["vs_baseline"] == pytest.approx(row["step_ms"] / base["step_ms"])
        assert row["min_vs_baseline"] == pytest.approx(row["min_ms"] / base["min_ms"])
        assert row["tokens_per_s"] == pytest.approx(result["counted_targets"] / row["step_ms"] * 1e3)
        assert row["peak_added_mib"] >= 0 and row["peak_rss_mib"] > 0
        if kind != "baseline":  # tables, extra heads or the MTP module on the same backbone
            assert row["params"] > base["params"]
    assert rows["ot3"]["params"] > rows["oe3"]["params"]  # OT-3 is OE-3 plus the MTP module
    assert result["ot3_over_oe3"] == pytest.approx(rows["ot3"]["step_ms"] / rows["oe3"]["step_ms"])
    assert small_kinds["baseline"].get("over_encoding") is None
    assert small_kinds["oe3"]["over_encoding"]["orders"] == [2, 3]


def test_a_batch_of_no_sentences_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        od.main(["--batch", "0"])
    assert exit_.value.code == 2 and "--batch and --repeats must be >= 1" in capsys.readouterr().err

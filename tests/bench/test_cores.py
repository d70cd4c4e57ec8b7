"""``oe bench cores``: both arms step on the same batch; the ratio is of its own figures."""

from __future__ import annotations

import json

import pytest

from oe.bench import cores


def test_both_arms_are_timed_and_compared(tmp_path, capsys):
    out = tmp_path / "cores.json"
    assert cores.main(["--cores", "2", "--batch", "4", "--rounds", "2", "--warmup", "0",
                       "--precision", "32", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    rates = figures["useful_tokens_per_s_all"]
    assert len(rates["threads"]) == len(rates["runs"]) == 2
    assert all(rate > 0 for values in rates.values() for rate in values)
    medians = figures["useful_tokens_per_s"]
    assert figures["runs_over_threads"] == pytest.approx(medians["runs"] / medians["threads"])
    assert "runs_over_threads" in capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--cores", "--rounds", "--batch"])
def test_counts_below_one_are_refused(flag, capsys):
    with pytest.raises(SystemExit):
        cores.main([flag, "0"])
    assert f"{flag} must be >= 1" in capsys.readouterr().err

"""``oe bench allocator``: both allocators step on the same batch, with their page faults; no
tcmalloc is one clear refusal."""

from __future__ import annotations

import json

import pytest

from oe.bench import allocator
from oe.cli.allocator import find_tcmalloc


@pytest.mark.skipif(find_tcmalloc() is None,
                    reason="no tcmalloc library on this machine (libtcmalloc-minimal4)")
def test_both_allocators_are_timed_and_compared(tmp_path, capsys):
    out = tmp_path / "allocator.json"
    assert allocator.main(["--batch", "4", "--rounds", "2", "--warmup", "0", "--precision", "32",
                           "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    cases = figures["cases"]
    assert set(cases) == {"system", "tcmalloc"}
    assert all(case["useful_tokens_per_s"] > 0 and case["page_faults_per_step"] >= 0
               for case in cases.values())
    assert figures["tcmalloc_over_system"] == pytest.approx(
        cases["tcmalloc"]["useful_tokens_per_s"] / cases["system"]["useful_tokens_per_s"])
    assert "tcmalloc_over_system" in capsys.readouterr().out


def test_no_tcmalloc_is_refused_with_the_install_hint(monkeypatch, capsys):
    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: None)
    with pytest.raises(SystemExit):
        allocator.main([])
    assert "libtcmalloc-minimal4" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--rounds", "--batch"])
def test_counts_below_one_are_refused(flag, capsys):
    with pytest.raises(SystemExit):
        allocator.main([flag, "0"])
    assert f"{flag} must be >= 1" in capsys.readouterr().err

"""oe bench train's cases and peaks (the timings themselves are benchmarks, not tests)."""

from __future__ import annotations

import pytest

from oe.bench import train


def test_padded_layout_only_in_the_first_precision_and_mode():
    assert train.case_names(["32", "bf16"], ["eager"]) == [
        "baseline:padded:32:eager", "baseline:packed:32:eager", "baseline:packed:bf16:eager",
        "oe3:padded:32:eager", "oe3:packed:32:eager", "oe3:packed:bf16:eager"]
    compiled = train.case_names(["bf16"], ["eager", "compiled"])
    assert [c for c in compiled if ":padded:" in c] == ["baseline:padded:bf16:eager",
                                                        "oe3:padded:bf16:eager"]
    assert "oe3:packed:bf16:compiled" in compiled


def test_cpu_peak_follows_the_precision_and_the_flags(monkeypatch):
    flags = {"avx512f", "fma"}
    monkeypatch.setattr("oe.training.precision.cpu_flags", lambda: frozenset(flags))
    fp32, bf16 = train.cpu_peak_gflops("32"), train.cpu_peak_gflops("bf16")
    if fp32 is None:
        pytest.skip("this system reports no CPU clock in /proc/cpuinfo")
    assert bf16 == fp32  # no native bf16: emulated at the fp32 rate
    flags.add("avx512_bf16")
    assert train.cpu_peak_gflops("bf16") == 2 * fp32
    flags.add("amx_bf16")
    assert train.cpu_peak_gflops("bf16") == 16 * fp32


@pytest.mark.parametrize("flag,value", [("--precisions", "fp16"), ("--modes", "eager,eager")])
def test_unknown_or_repeated_axis_values_are_refused(flag, value, capsys):
    with pytest.raises(SystemExit):
        train.main([flag, value])
    assert f"{flag} takes distinct values" in capsys.readouterr().err

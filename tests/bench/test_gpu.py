"""oe bench gpu: refused without CUDA; the tier's outcomes as pytest reports them (its JUnit XML)
and the throughput suite's file reach the JSON, and a failed test makes the exit status 1. The two
runs it starts (pytest on tests/gpu, oe bench train on CUDA) are replaced by what they write."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from oe.bench import common, gpu

JUNIT = """<testsuites><testsuite name="pytest">
<testcase classname="tests.gpu.test_attention" name="test_compiled_matches_eager"/>
<testcase classname="tests.gpu.test_bf16" name="test_bf16_close_to_fp32">
  <failure message="AssertionError: 0.3 &gt; 0.1&#10;second line">traceback</failure></testcase>
<testcase classname="tests.gpu.test_host" name="test_pinned_tables"><error message="RuntimeError: boom">tb</error></testcase>
<testcase classname="tests.gpu.test_nccl" name="test_two_gpus"><skipped message="needs 2 GPUs"/></testcase>
</testsuite></testsuites>"""


def test_without_cuda_it_refuses_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(gpu.torch.cuda, "is_available", lambda: False)
    assert gpu.main([]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: oe bench gpu needs a CUDA device (torch.cuda.is_available() is False)")


def test_tier_outcomes_and_throughput_reach_the_json(tmp_path, monkeypatch, capsys):
    started = []

    def run(command, **kwargs):
        started.append(command)
        if "pytest" in command:
            report = next(a for a in command if a.startswith("--junitxml=")).split("=", 1)[1]
            Path(report).write_text(JUNIT)
        else:
            Path(command[command.index("--out") + 1]).write_text(json.dumps({"rows": ["oe3"]}))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(gpu.subprocess, "run", run)
    monkeypatch.setattr(gpu.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(common, "_device", lambda: "a GPU")
    out = tmp_path / "gpu.json"
    assert gpu.main(["--rounds", "3", "--out", str(out)]) == 1  # a test failed
    result = json.loads(out.read_text())
    assert result["tier"] == {
        "test_compiled_matches_eager": "passed",
        "test_bf16_close_to_fp32": "failed: AssertionError: 0.3 > 0.1",
        "test_pinned_tables": "failed: RuntimeError: boom",
        "test_two_gpus": "skipped: needs 2 GPUs"}
    assert result["tier_failed"] == ["test_bf16_close_to_fp32", "test_pinned_tables"]
    assert result["throughput"] == {"rows": ["oe3"]} and result["device"] == "a GPU"
    train = started[1]
    assert train[train.index("--rounds") + 1] == "3" and train[train.index("--device") + 1] == "cuda"
    printed = capsys.readouterr().out
    assert "failed  test_bf16_close_to_fp32  (AssertionError: 0.3 > 0.1)" in printed

    started.clear()
    assert gpu.main(["--skip_tier", "--out", str(out)]) == 0  # throughput only
    assert len(started) == 1 and json.loads(out.read_text())["tier"] == {}

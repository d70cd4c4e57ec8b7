"""``oe bench gpu``: the first thing to run on a new GPU cluster.

Two parts in one call, about 8 minutes on one H100: the GPU test tier (``tests/gpu``: FlexAttention
forward and backward, compiled = eager, bf16-mixed against fp32, pinned host tables, no host
synchronisation in a step, fused tables over NCCL where 2 GPUs and CUDA fbgemm are present), then
the throughput suite (``oe bench train --suite gpu``: baseline and OE-3, packed, bf16, eager and
compiled, the paper's batch of 512 sentences). Writes ``bench_results/gpu.json``: pass / fail /
skip per test, useful tokens/s, MFU, compilations and peak memory per case.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

from oe.bench.common import write_json

ROOT = Path(__file__).resolve().parents[2]


def run_tier(timeout: int) -> dict[str, str]:
    """Outcome of each GPU-tier test: passed, failed (with its first line) or skipped (reason)."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "tier.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", str(ROOT / "tests" / "gpu"),
                        f"--junitxml={report}"], cwd=ROOT, timeout=timeout)
        outcomes = {}
        for case in ET.parse(report).getroot().iter("testcase"):
            name = case.get("name")
            problem = case.find("failure") if case.find("failure") is not None else case.find("error")
            skipped = case.find("skipped")
            if problem is not None:
                outcomes[name] = "failed: " + (problem.get("message") or "").splitlines()[0][:300]
            elif skipped is not None:
                outcomes[name] = "skipped: " + (skipped.get("message") or "")[:300]
            else:
                outcomes[name] = "passed"
        return outcomes


def run_throughput(rounds: int, timeout: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "train_gpu.json"
        subprocess.run([sys.executable, "-m", "oe.bench", "train", "--suite", "gpu", "--device", "cuda",
                        "--batch", "512", "--rounds", str(rounds), "--out", str(out)],
                       cwd=ROOT, timeout=timeout, check=True)
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oe bench gpu", description=__doc__.split("\n\n")[1])
    parser.add_argument("--rounds", type=int, default=5, help="timed steps per throughput case")
    parser.add_argument("--skip_tier", action="store_true", help="throughput only")
    parser.add_argument("--out", default=None, help="default: bench_results/gpu.json")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: oe bench gpu needs a CUDA device (torch.cuda.is_available() is False)",
              file=sys.stderr)
        return 2
    tier = {} if args.skip_tier else run_tier(timeout=300)
    for name, outcome in tier.items():
        print(f"{outcome.split(':')[0]:>8}  {name}" + (f"  ({outcome.split(': ', 1)[1]})"
                                                        if ": " in outcome else ""))
    throughput = run_throughput(args.rounds, timeout=420)
    failed = [n for n, o in tier.items() if o.startswith("failed")]
    write_json("gpu", {"tier": tier, "tier_failed": failed, "throughput": throughput}, args.out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""``oe bench cores``: threads per run against runs per core, for training on a CPU.

A CPU with ``--cores`` cores can train one run with that many threads, or that many runs with one
thread each (``oe evidence --parallel``). The same training step as ``oe bench train`` (the 2.4M
cfg3f model, packed global batch of ``--batch`` sentences, ``--precision``) is timed both ways,
in interleaved rounds: one worker process with ``--cores`` threads takes a step alone, then
``--cores`` one-thread workers take a step at once. The figure of each is useful tokens per
second over the whole machine (the one-thread workers: all their tokens over the slowest one's
step); ``runs_over_threads`` is the second over the first. Only an otherwise idle machine gives
a usable figure: both arms use every core.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from oe.bench.common import write_json
from oe.bench.train import KINDS
from oe.cli.table import print_table


def _workers(count: int, threads: int, args: argparse.Namespace) -> list[subprocess.Popen]:
    case = f"{args.kind}:packed:{args.precision}:eager"
    command = [sys.executable, "-m", "oe.bench.train", "--case", case, "--batch", str(args.batch),
               "--device", "cpu", "--threads", str(threads)]
    return [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": str(threads)})
            for _ in range(count)]


def _step_together(workers: list[subprocess.Popen]) -> list[dict]:
    """One step of every worker, started at once; each worker's figures."""
    for worker in workers:
        worker.stdin.write("step\n")
        worker.stdin.flush()
    steps = []
    for worker in workers:
        line = worker.stdout.readline()
        if not line:
            raise RuntimeError("a training worker stopped (its error is above)")
        steps.append(json.loads(line))
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oe bench cores", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", type=int, default=2, help="cores to fill (default 2)")
    parser.add_argument("--kind", choices=KINDS, default="baseline")
    parser.add_argument("--precision", choices=["32", "bf16"], default="bf16")
    parser.add_argument("--batch", type=int, default=64, help="sentences per global batch")
    parser.add_argument("--rounds", type=int, default=4, help="timed steps of each arm")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps of each arm")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    for name in ("cores", "batch", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    arms = {"threads": _workers(1, args.cores, args), "runs": _workers(args.cores, 1, args)}
    rates: dict[str, list[float]] = {arm: [] for arm in arms}
    try:
        for round_index in range(args.warmup + args.rounds):
            for arm, workers in arms.items():
                steps = _step_together(workers)
                rate = sum(s["tokens"] for s in steps) / max(s["seconds"] for s in steps)
                print(f"round {round_index + 1 - args.warmup}: {arm} {rate:,.0f} useful tokens/s",
                      flush=True)
                if round_index >= args.warmup:
                    rates[arm].append(rate)
    finally:
        for worker in (w for workers in arms.values() for w in workers):
            worker.stdin.close()
            worker.wait()
    medians = {arm: statistics.median(values) for arm, values in rates.items()}
    table = [{"arm": f"1 run x {args.cores} threads", "useful tok/s": f"{medians['threads']:,.0f}"},
             {"arm": f"{args.cores} runs x 1 thread", "useful tok/s": f"{medians['runs']:,.0f}"}]
    print_table(table, list(table[0]))
    ratio = medians["runs"] / medians["threads"]
    print(f"runs_over_threads: {ratio:.2f}")
    write_json("cores", {"cores": args.cores, "kind": args.kind, "precision": args.precision,
                         "batch": args.batch, "rounds": args.rounds,
                         "useful_tokens_per_s": medians, "useful_tokens_per_s_all": rates,
                         "runs_over_threads": ratio}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

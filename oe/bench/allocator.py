"""``oe bench allocator``: a CPU training step under the system's malloc against tcmalloc.

The same step as ``oe bench train`` (the 2.4M cfg3f model, packed global batch of ``--batch``
sentences, ``--precision``, one thread) in one worker process per allocator: ``system`` with
nothing preloaded, ``tcmalloc`` with the library ``oe.cli.allocator`` would preload. The workers
take turns step by step (interleaved rounds), so a load that changes slows both alike. Figures
per allocator: useful tokens/s, minor page faults per step and peak resident memory;
``tcmalloc_over_system`` is the ratio of useful tokens/s. Needs tcmalloc installed
(``oe.cli.allocator.INSTALL_HINT``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

from oe.bench.common import write_json
from oe.bench.train import KINDS, take_turns
from oe.cli.allocator import INSTALL_HINT, find_tcmalloc
from oe.cli.table import print_table


def _worker(preload: str, args: argparse.Namespace) -> subprocess.Popen:
    case = f"{args.kind}:packed:{args.precision}:eager"
    command = [sys.executable, "-m", "oe.bench.train", "--case", case, "--batch", str(args.batch),
               "--device", "cpu", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LD_PRELOAD": preload}
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oe bench allocator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=KINDS, default="baseline")
    parser.add_argument("--precision", choices=["32", "bf16"], default="bf16")
    parser.add_argument("--batch", type=int, default=64, help="sentences per global batch")
    parser.add_argument("--rounds", type=int, default=4, help="timed steps of each allocator")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps of each allocator")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    for name in ("batch", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    tcmalloc = find_tcmalloc()
    if tcmalloc is None:
        parser.error(f"no tcmalloc library was found ({INSTALL_HINT})")
    workers = {"system": _worker("", args), "tcmalloc": _worker(tcmalloc, args)}
    steps = take_turns(workers, args.warmup, args.rounds,
                       lambda step: f", {step['page_faults']:,} page faults")
    figures = {name: {"useful_tokens_per_s": statistics.median(s["tokens"] / s["seconds"]
                                                               for s in runs),
                      "page_faults_per_step": statistics.median(s["page_faults"] for s in runs),
                      "peak_rss_mib": max(s["peak_mib"] for s in runs)}
               for name, runs in steps.items()}
    table = [{"allocator": name, "useful tok/s": f"{f['useful_tokens_per_s']:,.0f}",
              "page faults/step": f"{f['page_faults_per_step']:,.0f}",
              "peak RSS MiB": f"{f['peak_rss_mib']:,.0f}"} for name, f in figures.items()]
    print_table(table, list(table[0]))
    ratio = figures["tcmalloc"]["useful_tokens_per_s"] / figures["system"]["useful_tokens_per_s"]
    print(f"tcmalloc_over_system: {ratio:.2f}")
    write_json("allocator", {"kind": args.kind, "precision": args.precision, "batch": args.batch,
                             "rounds": args.rounds, "tcmalloc": tcmalloc, "cases": figures,
                             "tcmalloc_over_system": ratio}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m oe.bench shard``: one step of a row-wise sharded n-gram table, 1 rank against 2.

For each table size m (width 64, one table) and each world size, the ranks run as separate
processes over gloo; each builds the table on the meta device and draws only its own rows
(``oe.parallelize``), then times lookup + backward + fused RowWiseAdagrad update on a fixed
global batch of ids, uniform over the rows (the same ids per step on 1 and on 2 ranks). Reports
the median step time, the ratio to the smallest m, the cost of 2 ranks against 1, and each
rank's peak resident memory next to its share of the table.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys

import torch

from oe.bench.common import peak_rss_mib, print_table, time_call, write_json

SEQUENCE = 128  # ids per row of the KeyedJaggedTensor, as in a batch of sequences


def worker(args: argparse.Namespace) -> None:
    import torch.distributed as dist
    from torchrec import EmbeddingCollection, EmbeddingConfig, KeyedJaggedTensor

    from oe.parallelize import TablePlan, row_split, shard_tables

    torch.set_num_threads(args.threads)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    m = args.m[0]
    dist.init_process_group("gloo", rank=rank, world_size=world)
    before = peak_rss_mib()
    collection = EmbeddingCollection(
        tables=[EmbeddingConfig(name="t", embedding_dim=args.width, num_embeddings=m,
                                feature_names=["t"])],
        device=torch.device("meta"),
    )
    sharded = shard_tables(collection, TablePlan("rowwise_adagrad", lr=0.01, weight_decay=0.0,
                                                seed=0, init_std=0.02), torch.device("cpu"))
    per_rank = args.ids // world
    # Rank r takes its slice of the same global batches on any world size.
    generator = torch.Generator().manual_seed(1234)
    batches = [torch.randint(0, m, (args.ids,), generator=generator)[rank * per_rank:
                                                                          (rank + 1) * per_rank]
               for _ in range(4)]
    lengths = torch.full((per_rank // SEQUENCE,), SEQUENCE, dtype=torch.int32)
    state = {"i": 0}

    def step() -> None:
        ids = batches[state["i"] % len(batches)]
        state["i"] += 1
        features = KeyedJaggedTensor.from_lengths_sync(keys=["t"], values=ids, lengths=lengths)
        sharded(features)["t"].values().square().sum().backward()  # the update is fused in here

    dist.barrier()
    timing = time_call(step, repeats=args.repeats, warmup=3)
    rows = row_split(m, world)[rank][1]
    result = {"rank": rank, "world": world, "m": m, **timing,
              "rows": rows, "table_mib": rows * args.width * 4 / 2**20,
              "rss_before_mib": before, "peak_rss_mib": peak_rss_mib()}
    print("RESULT " + json.dumps(result), flush=True)
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(m: int, world: int, args: argparse.Namespace) -> list[dict]:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "WORLD_SIZE": str(world), "OMP_NUM_THREADS": str(args.threads)}
    command = [sys.executable, "-m", "oe.bench.shard", "--worker", "--m", str(m),
               "--width", str(args.width), "--ids", str(args.ids), "--repeats", str(args.repeats),
               "--threads", str(args.threads)]
    procs = [subprocess.Popen(command, env={**env, "RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(world)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=args.timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"m={m}, {world} ranks failed:\n{err[-3000:]}")
        results += [json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")]
    return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m oe.bench shard", description=__doc__.split("\n")[0])
    parser.add_argument("--m", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--ids", type=int, default=16_384, help="ids per step, all ranks together")
    parser.add_argument("--worlds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--out", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if any(args.ids % (w * SEQUENCE) for w in args.worlds):
        print(f"error: --ids must be a multiple of {SEQUENCE} x each world size", file=sys.stderr)
        return 2
    rows = []
    for world in args.worlds:
        for m in args.m:
            ranks = run(m, world, args)
            slowest = max(r["median_s"] for r in ranks)
            rows.append({"ranks": world, "m": m, "step_ms": 1e3 * slowest,
                         "table_MiB/rank": max(r["table_mib"] for r in ranks),
                         "peak_RSS_MiB/rank": max(r["peak_rss_mib"] for r in ranks),
                         "RSS_before_table_MiB": max(r["rss_before_mib"] for r in ranks),
                         "per_rank": ranks})
    smallest = min(args.m)
    for row in rows:
        base = next(r for r in rows if r["ranks"] == row["ranks"] and r["m"] == smallest)
        row[f"time/time(m={smallest:.0e})"] = row["step_ms"] / base["step_ms"]
        one = next((r for r in rows if r["ranks"] == 1 and r["m"] == row["m"]), None)
        if one is not None:
            row["time/time(1 rank)"] = row["step_ms"] / one["step_ms"]
    print(f"lookup + backward + fused RowWiseAdagrad update, width {args.width}, {args.ids} ids "
          f"per step in all, {args.threads} thread(s) per rank; median of {args.repeats}")
    columns = ["ranks", "m", "step_ms", f"time/time(m={smallest:.0e})", "time/time(1 rank)",
               "table_MiB/rank", "RSS_before_table_MiB", "peak_RSS_MiB/rank"]
    print_table(rows, columns)
    write_json("shard", {"args": {k: v for k, v in vars(args).items() if k != "worker"},
                         "rows": rows}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

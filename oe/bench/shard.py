"""``oe bench shard``: one step of a row-wise sharded n-gram table, 1 rank against 2.

For each world size the ranks run as separate processes over gloo. Each rank builds one table of
every size m (width 64) on the meta device and draws only its own rows (``oe.distributed.parallelize``),
then times lookup + backward + fused RowWiseAdagrad update on a fixed global batch of ids,
uniform over the rows (the same ids per step on 1 and on 2 ranks). Steps of the table sizes are
interleaved, so that a busy machine slows them alike. Reports the median step time, its ratio to
the smallest m and to 1 rank, and per rank the memory each table added beside its share of rows."""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys

import torch

from oe.bench.common import peak_rss_mib, write_json
from oe.cli.table import print_table
from oe.cli.flags import Parser

SEQUENCE = 128  # ids per row of the KeyedJaggedTensor, as in a batch of sequences


def worker(args: argparse.Namespace) -> None:
    """One rank: every table size side by side, steps interleaved so that load hits all alike."""
    import time

    import torch.distributed as dist
    from torchrec import EmbeddingCollection, EmbeddingConfig, KeyedJaggedTensor

    from oe.distributed.parallelize import TableSharding, row_split, shard_tables

    torch.set_num_threads(args.threads)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", rank=rank, world_size=world)
    per_rank = args.ids // world
    lengths = torch.full((per_rank // SEQUENCE,), SEQUENCE, dtype=torch.int32)
    tables, memory = {}, {}
    for m in sorted(args.m):  # growing sizes: the rise of the peak is this table's cost
        before = peak_rss_mib()
        collection = EmbeddingCollection(
            tables=[EmbeddingConfig(name="t", embedding_dim=args.width, num_embeddings=m,
                                    feature_names=["t"])],
            device=torch.device("meta"),
        )
        sharding = TableSharding("rowwise_adagrad", lr=0.01, weight_decay=0.0, seed=0, init_std=0.02)
        sharded = shard_tables(collection, sharding, torch.device("cpu"))
        # Rank r takes its slice of the same global batches on any world size.
        generator = torch.Generator().manual_seed(1234)
        batches = [torch.randint(0, m, (args.ids,), generator=generator)
                   [rank * per_rank:(rank + 1) * per_rank] for _ in range(4)]
        tables[m] = (sharded, batches)
        memory[m] = {"rows": row_split(m, world)[rank][1], "rss_rise_mib": peak_rss_mib() - before}

    def step(m: int, i: int) -> None:
        sharded, batches = tables[m]
        features = KeyedJaggedTensor.from_lengths_sync(keys=["t"], values=batches[i % 4],
                                                       lengths=lengths)
        sharded(features)["t"].values().square().sum().backward()  # the update is fused in here

    times: dict[int, list[float]] = {m: [] for m in args.m}
    for i in range(3 + args.repeats):
        for m in args.m:
            dist.barrier()
            start = time.perf_counter()
            step(m, i)
            dist.barrier()  # a step ends when the slowest rank is done
            if i >= 3:
                times[m].append(time.perf_counter() - start)
    for m in args.m:
        result = {"rank": rank, "world": world, "m": m, "median_s": statistics.median(times[m]),
                  "min_s": min(times[m]), **memory[m],
                  "table_mib": memory[m]["rows"] * args.width * 4 / 2**20,
                  "peak_rss_mib": peak_rss_mib()}
        print("RESULT " + json.dumps(result), flush=True)
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(world: int, args: argparse.Namespace) -> list[dict]:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "WORLD_SIZE": str(world), "OMP_NUM_THREADS": str(args.threads)}
    command = [sys.executable, "-m", "oe.bench.shard", "--worker", "--m", *map(str, args.m),
               "--width", str(args.width), "--ids", str(args.ids), "--repeats", str(args.repeats),
               "--threads", str(args.threads)]
    procs = [subprocess.Popen(command, env={**env, "RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(world)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=args.timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{world} ranks failed:\n{err[-3000:]}")
        results += [json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")]
    return results


def main(argv: list[str]) -> int:
    parser = Parser(prog="oe bench shard",
                                     description=__doc__.split("\n")[0])
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
        results = run(world, args)
        for m in args.m:
            ranks = [r for r in results if r["m"] == m]
            rows.append({"ranks": world, "m": m, "step_ms": 1e3 * ranks[0]["median_s"],
                         "best_ms": 1e3 * max(r["min_s"] for r in ranks),
                         "table_MiB/rank": max(r["table_mib"] for r in ranks),
                         "RSS_rise_MiB/rank": max(r["rss_rise_mib"] for r in ranks),
                         "peak_RSS_MiB/rank": max(r["peak_rss_mib"] for r in ranks),
                         "per_rank": ranks})
    smallest = min(args.m)
    for row in rows:
        base = next(r for r in rows if r["ranks"] == row["ranks"] and r["m"] == smallest)
        row[f"time/time(m={smallest:.0e})"] = row["step_ms"] / base["step_ms"]
        one = next((r for r in rows if r["ranks"] == 1 and r["m"] == row["m"]), None)
        if one is not None:
            row["time/time(1 rank)"] = row["step_ms"] / one["step_ms"]
    print(f"lookup + backward + fused RowWiseAdagrad update, width {args.width}, {args.ids} ids "
          f"per step in all, {args.threads} thread(s) per rank; median (and best) of "
          f"{args.repeats} steps, table sizes interleaved. RSS rise: the peak's growth while "
          f"that table was built (tables built smallest first); peak RSS: all tables together.")
    columns = ["ranks", "m", "step_ms", "best_ms", f"time/time(m={smallest:.0e})",
               "time/time(1 rank)", "table_MiB/rank", "RSS_rise_MiB/rank", "peak_RSS_MiB/rank"]
    print_table(rows, columns)
    write_json("shard", {"args": {k: v for k, v in vars(args).items() if k != "worker"},
                         "rows": rows}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

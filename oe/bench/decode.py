"""``oe bench decode``: decoding tokens/s of OE-3 against the baseline.

GPT-2-small shape (12 layers, width 768, 12 heads, vocabulary 50257; ``--shape`` another),
greedy decoding with the key/value cache (``oe.models.decoding.decode``) of ``--new_tokens``
tokens after an ``--prompt_tokens`` prompt, at each ``--batches`` size, for: the baseline, OE-3
(orders 2 and 3, m = ``--modulus``) with its tables on the device, and OE-3 with its tables in
host memory (``HostTables``: pinned, only each step's rows moved; on a CPU-only machine both live
in the same memory, but the host path is the one that runs). The models are built once and timed
in interleaved rounds, each starting with another path, so that noise on a shared machine hits
them alike; the figure is each path's fastest round (load from other processes only ever adds
time), the median beside it. The input embedding of one step (the only part OE-3 changes beside
the D x D projection it includes) is also timed alone, many times over, as milliseconds per step.

Targets: OE-3 / baseline >= 0.95 at batch 1 on CPU; on a GPU with host tables, the paper reports
-7% (its Table 7).
"""

from __future__ import annotations

import argparse
import statistics

import torch

from oe.bench.common import peak_rss_mib, timed, write_json
from oe.cli.table import print_table
from oe.models.build import build_model
from oe.models.decoding import Sampling, decode
from oe.models.embedding import HostTables, OverEncodingConfig
from oe.models.gpt import PRESETS, BackboneConfig
from oe.cli.flags import Parser

GREEDY = Sampling(temperature=0)


def build(shape: str, vocab_size: int, over_encoding: OverEncodingConfig | None,
          device: torch.device):
    torch.manual_seed(0)
    backbone = BackboneConfig(**{**PRESETS[shape].__dict__, "compile": False})
    return build_model(vocab_size, backbone=backbone,
                       over_encoding=over_encoding).gpt.eval().to(device)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="oe bench decode", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(PRESETS), default="gpt2_small")
    parser.add_argument("--vocab_size", type=int, default=50257)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--modulus", type=int, default=1_000_003,
                        help="rows of the first table (the paper's 12.8M needs ~40 GB here)")
    parser.add_argument("--prompt_tokens", type=int, default=8)
    parser.add_argument("--new_tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                          if args.device == "auto" else args.device)
    baseline = build(args.shape, args.vocab_size, None, device)
    oe3 = build(args.shape, args.vocab_size,
                OverEncodingConfig(orders=[2, 3], modulus=args.modulus, shard_tables=False), device)
    # The host path takes the tables out of the module; keep them to put back for the device path.
    collection = oe3.embedding.ngram
    host_tables = HostTables(oe3.embedding, device)
    oe3.embedding.ngram = collection

    def run(model, prompts, host=None):
        if host is not None:
            model.embedding.ngram = None
        try:
            decode(model, prompts, args.new_tokens, GREEDY, host_tables=host)
        finally:
            if host is not None:
                model.embedding.ngram = collection

    def embed_step(model, recent, host=None):
        """What a step spends before the transformer: the newest token's input embedding."""
        if host is None:
            model.embedding.forward_last(recent)
        else:
            model.embedding.forward_last(recent, host.last_rows(recent))

    paths = {"baseline": (baseline, None), "oe3_tables_on_device": (oe3, None),
             "oe3_tables_in_host_memory": (oe3, host_tables)}
    results = {}
    for batch in args.batches:
        prompts = torch.randint(0, args.vocab_size, (batch, args.prompt_tokens),
                                generator=torch.Generator().manual_seed(batch)).to(device)
        for model, host in paths.values():  # warm-up: allocator, kernels
            run(model, prompts, host)
        seconds = {name: [] for name in paths}
        names = list(paths)
        for round_ in range(args.rounds):  # each round starts with another path
            for name in names[round_ % len(names):] + names[: round_ % len(names)]:
                model, host = paths[name]
                seconds[name].append(timed(lambda: run(model, prompts, host)))
        # The embedding part alone: cheap, so timed many times; far less exposed to load.
        recent = prompts[:, -3:]
        embedding_ms = {}
        with torch.no_grad():
            for name, (model, host) in paths.items():
                blocks = [timed(lambda: [embed_step(model, recent, host) for _ in range(50)])
                          for _ in range(args.rounds)]
                embedding_ms[name] = 1000 * min(blocks) / 50
        tokens = batch * args.new_tokens
        fastest = {name: tokens / min(s) for name, s in seconds.items()}
        median = {name: tokens / statistics.median(s) for name, s in seconds.items()}
        results[batch] = {name: {"tokens_per_s": fastest[name],
                                 "ratio_to_baseline": fastest[name] / fastest["baseline"],
                                 "median_tokens_per_s": median[name],
                                 "median_ratio_to_baseline": median[name] / median["baseline"],
                                 "embedding_ms_per_step": embedding_ms[name]}
                          for name in paths}
    rows = [{"batch": batch, "path": name, "tokens/s": round(r["tokens_per_s"], 1),
             "/ baseline": round(r["ratio_to_baseline"], 3),
             "median / baseline": round(r["median_ratio_to_baseline"], 3),
             "embedding ms/step": round(r["embedding_ms_per_step"], 3)}
            for batch, by_path in results.items() for name, r in by_path.items()]
    print_table(rows, ["batch", "path", "tokens/s", "/ baseline", "median / baseline",
                       "embedding ms/step"])
    write_json("decode", {
        "shape": args.shape, "vocab_size": args.vocab_size, "modulus": args.modulus,
        "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
        "rounds": args.rounds, "peak_rss_mib": peak_rss_mib(),
        "results": {str(b): r for b, r in results.items()},
    }, args.out)
    return 0

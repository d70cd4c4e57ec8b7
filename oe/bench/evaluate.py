"""``oe bench evaluate``: zero-shot scoring throughput (items/s) of a GPT-2-small shape.

Random weights (12 layers, width 768, 12 heads, 50,257 ids, 1,024 positions: the shape of GPT-2
124M; throughput does not depend on the values) and HellaSwag-shaped items made of random token
ids: a context of about 45 tokens and 4 endings of about 22 (HellaSwag's validation averages
with GPT-2's tokenizer). Times ``oe.evaluation.scoring.loglikelihoods`` side by side: one request at a time
(the unbatched way) and batched, for the plain backbone and with Over-Encoding tables
(orders 2, 3) whose n-gram ids are computed over context + ending.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from oe.bench.common import peak_rss_mib, write_json
from oe.cli.table import print_table
from oe.models.embedding import OverEncodingConfig
from oe.evaluation.scoring import Request, loglikelihoods
from oe.models.build import build_model
from oe.models.gpt import PRESETS
from oe.cli.flags import Parser


def hellaswag_shaped(n_items: int, vocab: int, seed: int = 0) -> list[Request]:
    rng = np.random.default_rng(seed)
    requests = []
    for i in range(n_items):
        context = rng.integers(1, vocab, int(rng.integers(30, 61))).tolist()
        for c in range(4):
            ending = rng.integers(1, vocab, int(rng.integers(12, 33))).tolist()
            requests.append(Request(i, c, context, ending))
    return requests


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="oe bench evaluate", description=__doc__)
    parser.add_argument("--items", type=int, default=32, help="HellaSwag-shaped items per timing")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--modulus", type=int, default=100_003, help="rows per OE table")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vocab = 50257
    backbone = PRESETS["gpt2_small"]
    models = {
        "gpt2-small": build_model(vocab_size=vocab, backbone=backbone).gpt.eval(),
        "gpt2-small + OE(2,3)": build_model(
            vocab_size=vocab, backbone=backbone,
            over_encoding=OverEncodingConfig(orders=[2, 3], modulus=args.modulus)).gpt.eval(),
    }
    requests = hellaswag_shaped(args.items, vocab)
    tokens = sum(len(r.context) + len(r.continuation) for r in requests)
    rows = []
    for name, model in models.items():
        loglikelihoods(model, requests[:8], batch_size=8)  # warm-up
        for batch in args.batch_sizes:
            start = time.perf_counter()
            loglikelihoods(model, requests, batch_size=batch)
            seconds = time.perf_counter() - start
            rows.append({"model": name, "batch": batch, "items": args.items, "seconds": seconds,
                         "items_per_s": args.items / seconds, "tokens_per_s": tokens / seconds})
    base = {r["model"]: r["items_per_s"] for r in rows if r["batch"] == args.batch_sizes[0]}
    for r in rows:
        r["speedup_vs_batch_" + str(args.batch_sizes[0])] = r["items_per_s"] / base[r["model"]]
    print_table(rows, ["model", "batch", "items", "seconds", "items_per_s", "tokens_per_s",
                       "speedup_vs_batch_" + str(args.batch_sizes[0])])
    write_json("evaluate", {"rows": rows, "peak_rss_mib": peak_rss_mib(),
                            "threads": torch.get_num_threads(), "requests": len(requests),
                            "tokens": tokens}, args.out)
    return 0

"""``oe bench mine``: n-gram mining speed (tokens/s) of ``oe.analysis.mining``'s pruned counter.

A synthetic corpus of GPT-2-sized ids (V = 50,257) drawn from a Zipf law (exponent 1.1, close to
natural text's) in articles of ~3,000 tokens, counted in one pass for orders {2, 3} and
{2, 3, 4, 5}, with a capacity that never prunes and one that prunes often.
"""

from __future__ import annotations

import time

import numpy as np

from oe.bench.common import peak_rss_mib, write_json
from oe.cli.table import print_table
from oe.analysis.mining import count_ngrams
from oe.cli.flags import Parser


def zipf_corpus(n_tokens: int, vocab: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, vocab + 1, dtype=np.float64)
    p = ranks ** -1.1
    tokens = rng.choice(vocab, size=n_tokens, p=p / p.sum()).astype(np.int32)
    starts = np.concatenate([[0], np.cumsum(rng.integers(1000, 5000, n_tokens // 1000))])
    return tokens, starts[starts < n_tokens].astype(np.int64)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="oe bench mine", description=__doc__)
    parser.add_argument("--tokens", type=int, default=4_000_000)
    parser.add_argument("--capacities", type=int, nargs="+", default=[8_000_000, 200_000])
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    vocab = 50257
    tokens, starts = zipf_corpus(args.tokens, vocab)
    rows = []
    for orders in ([2, 3], [2, 3, 4, 5]):
        for capacity in args.capacities:
            start = time.perf_counter()
            counters = count_ngrams(tokens, starts, orders, vocab, capacity, progress=False)
            seconds = time.perf_counter() - start
            rows.append({"orders": ",".join(map(str, orders)), "capacity": capacity,
                         "tokens": args.tokens, "seconds": seconds,
                         "tokens_per_s": args.tokens / seconds,
                         "prunes": sum(c.prunes for c in counters.values()),
                         "max_undercount": max(c.max_undercount for c in counters.values())})
    print_table(rows, ["orders", "capacity", "tokens", "seconds", "tokens_per_s", "prunes",
                       "max_undercount"])
    write_json("mine", {"rows": rows, "vocab_size": vocab, "peak_rss_mib": peak_rss_mib()}, args.out)
    return 0

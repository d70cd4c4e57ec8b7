"""``oe mine``: the most frequent n-grams of a tokenised corpus, for frequent-n-gram rows.

    oe mine --config configs/wikitext_gpt2_frequent.yaml --orders 2,3,4,5 \
        --top_k 100000 --out runs/mined/wikitext103_gpt2.jsonl
    oe mine --train_file data/docstrings/train.txt --tokenizer bpe --top_k 1000 ...

The corpus is the training split of a ``WikitextDataModule`` (the ``data`` section of a config,
read as ``oe fit`` reads it, layers and overrides included; or a text file), tokenised and cached exactly as training reads it. One streaming pass over its
tokens counts, for every order, the n-grams that lie inside one article.

Memory is bounded by a pruned counter: each order keeps at most ``capacity`` distinct n-grams.
When a merge overflows it, the rarest are dropped, keeping the ``capacity // 2`` most frequent
(ties broken by key). An n-gram's reported count is a lower bound of its true count, short by at
most the sum of the largest counts dropped at each prune (written to the header as
``max_undercount``); with no prune the counts are exact. Cost: 2 x capacity keys of
``ceil(n / (64 // bits))`` words plus a count each, per order, and one sort per chunk.

Output: a JSONL file whose first line is ``{"meta": {...}}`` (tokenizer, vocabulary size,
tokens counted, capacity, undercount bounds) and then, per order, the ``top_k`` n-grams by
count: ``{"order": n, "tokens": [...], "count": c, "text": "..."}``.
"""

from __future__ import annotations
import argparse
import sys
import numpy as np

from oe.analysis.mining import check_corpus_files, count_ngrams, write_mined
from oe.cli.paths import check_output_file


def _datamodule(args):
    from datamodules.wikitext import WikitextDataModule

    if args.config:
        from oe.cli.config import class_of, instantiate_data, parse_fit_config

        fit_args = [word for path in args.config for word in ("--config", path)]
        config = parse_fit_config(fit_args)
        if not issubclass(class_of(config.data, "data"), WikitextDataModule):
            raise ValueError(f"data.class_path is {config.data.class_path}; oe.mine reads a "
                             f"WikitextDataModule")
        return instantiate_data(config)
    if not args.train_file:
        raise ValueError("give --config (a Wikitext config) or --train_file")
    check_corpus_files(args.train_file)
    return WikitextDataModule(data_files={"train": args.train_file}, tokenizer=args.tokenizer,
                              bpe_vocab_size=args.bpe_vocab_size, cache_dir=args.cache_dir,
                              num_workers=args.num_workers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oe mine", description=__doc__.split("\n")[0])
    parser.add_argument("--config", action="append",
                        help="a config whose data section is a WikitextDataModule (repeatable: "
                             "later ones override, as in oe.fit)")
    parser.add_argument("--train_file", nargs="+", help="local text file(s) in Wikitext's format")
    parser.add_argument("--tokenizer", default="gpt2", help="hub id, tokenizer.json, or 'bpe'")
    parser.add_argument("--bpe_vocab_size", type=int, default=16384)
    parser.add_argument("--cache_dir", default="data/cache")
    parser.add_argument("--num_workers", type=int, default=1)
    parser.add_argument("--orders", default="2,3", help="comma-separated orders, each 2..8")
    parser.add_argument("--top_k", type=int, default=100_000, help="n-grams written per order")
    parser.add_argument("--capacity", type=int, default=4_000_000,
                        help="distinct n-grams kept per order before pruning")
    parser.add_argument("--chunk_tokens", type=int, default=1 << 20)
    parser.add_argument("--out", required=True, help="the JSONL file to write")
    args = parser.parse_args(argv)
    try:
        orders = sorted({int(o) for o in args.orders.split(",")})
    except ValueError:
        parser.error(f"--orders must be comma-separated integers, got {args.orders!r}")
    if min(orders) < 2 or max(orders) > 8:
        parser.error(f"--orders must lie in 2..8, got {args.orders}")
    if args.top_k < 1 or args.capacity < 2 * args.top_k:
        parser.error("--top_k must be >= 1 and --capacity at least 2 x --top_k")
    from datasets.exceptions import DatasetGenerationError

    try:
        check_output_file(args.out, "--out", "mined.jsonl")  # before the work: a bad --out costs nothing
        dm = _datamodule(args)
        tokens_path, starts_path = dm.token_files("train")
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except DatasetGenerationError as err:
        cause = err.__cause__ or err
        print(f"error: the corpus cannot be read as text ({type(cause).__name__}: {cause})",
              file=sys.stderr)
        return 2
    tokens, starts = np.load(tokens_path, mmap_mode="r"), np.load(starts_path)
    if len(tokens) == 0:
        print(f"error: the corpus has no tokens ({tokens_path}); there is nothing to count",
              file=sys.stderr)
        return 2
    counters = count_ngrams(tokens, starts, orders, dm.vocab_size, args.capacity, args.chunk_tokens)
    meta = {"tokenizer": dm.tokenizer_file, "tokenizer_fingerprint": dm.fingerprint,
            "vocab_size": dm.vocab_size, "tokens_counted": int(len(tokens)),
            "capacity": args.capacity, "source": str(tokens_path)}
    path = write_mined(args.out, counters, args.top_k, meta, decode=dm.tokenizer.decode)
    for n, c in counters.items():
        best = c.top(1)
        print(f"{n}-grams: {len(c.counts):,} kept, {c.prunes} prunes, counts short by <= "
              f"{c.max_undercount}; most frequent {dm.tokenizer.decode(best[0][0])!r} x {best[0][1]}"
              if best else f"{n}-grams: none")
    print(f"wrote {path}")
    return 0

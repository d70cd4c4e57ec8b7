"""Counting the most frequent n-grams of a token stream, for ``oe mine`` (``oe.cli.mine``).

One streaming pass over the tokens counts, for every order, the n-grams that lie inside one
article (``count_ngrams``); ``write_mined`` writes the top ones as the JSONL file that
``oe.models.frequent_ngrams`` reads: a header line ``{"meta": {...}}``, then per order the
``top_k`` n-grams by count, ``{"order": n, "tokens": [...], "count": c, "text": "..."}``.

Memory is bounded by ``PrunedCounter``: each order keeps at most ``capacity`` distinct n-grams,
as exact keys (token ids packed ``64 // bits`` to a uint64 word). When a merge overflows it, the
rarest are dropped, keeping the ``capacity // 2`` most frequent (ties broken by key), so an
n-gram's count is a lower bound of its true count, short by at most the sum of the largest
counts dropped at each prune (the header's ``max_undercount``); with no prune it is exact. Cost
per order: up to 2 x capacity keys of ``ceil(n / (64 // bits))`` words and a count each, and one
sort per chunk.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from oe.files import write_atomically


def pack_width(vocab_size: int) -> int:
    """Bits per token id in a packed key."""
    return max(1, math.ceil(math.log2(vocab_size)))


def pack(windows: np.ndarray, vocab_size: int) -> np.ndarray:
    """Exact keys [N, words] uint64 of token windows [N, n] (tokens packed ``64 // bits`` a word)."""
    bits = pack_width(vocab_size)
    per_word = 64 // bits
    n = windows.shape[1]
    words = math.ceil(n / per_word)
    keys = np.zeros((len(windows), words), dtype=np.uint64)
    for j in range(n):
        word, slot = divmod(j, per_word)
        keys[:, word] |= windows[:, j].astype(np.uint64) << np.uint64(slot * bits)
    return keys


def unpack(keys: np.ndarray, order: int, vocab_size: int) -> np.ndarray:
    bits = pack_width(vocab_size)
    per_word = 64 // bits
    mask = np.uint64((1 << bits) - 1)
    out = np.empty((len(keys), order), dtype=np.int64)
    for j in range(order):
        word, slot = divmod(j, per_word)
        out[:, j] = (keys[:, word] >> np.uint64(slot * bits)) & mask
    return out


def sum_by_key(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of ``keys`` [N, W] (sorted) and the summed ``counts`` of each."""
    if len(keys) == 0:
        return keys, counts
    if keys.shape[1] == 1:
        unique, inverse = np.unique(keys[:, 0], return_inverse=True)
        return unique[:, None], np.bincount(inverse, weights=counts).astype(np.int64)
    order = np.lexsort(keys.T[::-1])
    keys, counts = keys[order], counts[order]
    starts = np.concatenate([[True], (keys[1:] != keys[:-1]).any(axis=1)])
    first = np.flatnonzero(starts)
    return keys[first], np.add.reduceat(counts, first)


class PrunedCounter:
    """Counts of n-grams of one order, at most ``capacity`` of them kept (see the module doc)."""

    def __init__(self, order: int, vocab_size: int, capacity: int) -> None:
        if capacity < 2:
            raise ValueError(f"--capacity must be >= 2, got {capacity}")
        self.order, self.vocab_size, self.capacity = order, vocab_size, capacity
        words = math.ceil(order / (64 // pack_width(vocab_size)))
        self.keys = np.zeros((0, words), dtype=np.uint64)
        self.counts = np.zeros(0, dtype=np.int64)
        self.max_undercount = 0
        self.prunes = 0

    def add(self, windows: np.ndarray) -> None:
        keys = pack(windows, self.vocab_size)
        self.keys, self.counts = sum_by_key(
            np.concatenate([self.keys, keys]),
            np.concatenate([self.counts, np.ones(len(keys), dtype=np.int64)]),
        )
        if len(self.counts) > self.capacity:
            keep = self._top(self.capacity // 2)
            dropped = np.ones(len(self.counts), dtype=bool)
            dropped[keep] = False
            self.max_undercount += int(self.counts[dropped].max())
            self.prunes += 1
            keep.sort()  # stay sorted by key
            self.keys, self.counts = self.keys[keep], self.counts[keep]

    def _top(self, k: int) -> np.ndarray:
        # Highest count first; equal counts by key, so the result does not depend on chunking.
        order = np.lexsort((*self.keys.T[::-1], -self.counts))
        return order[:k]

    def top(self, k: int) -> list[tuple[list[int], int]]:
        index = self._top(min(k, len(self.counts)))
        tokens = unpack(self.keys[index], self.order, self.vocab_size)
        return [(t.tolist(), int(c)) for t, c in zip(tokens, self.counts[index])]


def windows_in_documents(tokens: np.ndarray, doc_starts: np.ndarray, start: int, stop: int,
                         order: int) -> np.ndarray:
    """Windows [N, order] of the n-grams ending at positions start..stop-1 that stay in one article."""
    ends = np.arange(max(start, order - 1), stop)
    first = ends - (order - 1)
    doc_of_end = np.searchsorted(doc_starts, ends, side="right") - 1
    ends, first = ends[first >= doc_starts[doc_of_end]], first[first >= doc_starts[doc_of_end]]
    if len(ends) == 0:
        return np.zeros((0, order), dtype=np.int64)
    lo = int(first[0])
    span = np.asarray(tokens[lo:stop], dtype=np.int64)
    return np.stack([span[first - lo + j] for j in range(order)], axis=1)


def count_ngrams(tokens: np.ndarray, doc_starts: np.ndarray, orders: list[int], vocab_size: int,
                 capacity: int, chunk_tokens: int = 1 << 20, progress: bool = True) -> dict[int, PrunedCounter]:
    """One pass over ``tokens`` with a pruned counter per order."""
    from tqdm import tqdm

    counters = {n: PrunedCounter(n, vocab_size, capacity) for n in orders}
    with tqdm(total=len(tokens), unit="tok", unit_scale=True, disable=not progress,
              desc="counting n-grams") as bar:
        for start in range(0, len(tokens), chunk_tokens):
            stop = min(start + chunk_tokens, len(tokens))
            for n, counter in counters.items():
                counter.add(windows_in_documents(tokens, doc_starts, start, stop, n))
            bar.update(stop - start)
    return counters


def write_mined(path: str | Path, counters: dict[int, PrunedCounter], top_k: int, meta: dict,
                decode=None) -> Path:
    """Write the mined n-grams to ``path``: whole or not at all (a temporary file, then renamed)."""
    meta = {**meta, "top_k": top_k, "orders": sorted(counters),
            "max_undercount": {str(n): c.max_undercount for n, c in counters.items()},
            "prunes": {str(n): c.prunes for n, c in counters.items()}}

    def write(writing: Path) -> None:
        with writing.open("w") as f:
            f.write(json.dumps({"meta": meta}) + "\n")
            for n in sorted(counters):
                for tokens, count in counters[n].top(top_k):
                    row = {"order": n, "tokens": tokens, "count": count}
                    if decode is not None:
                        row["text"] = decode(tokens)
                    f.write(json.dumps(row) + "\n")

    return write_atomically(path, write)


def check_corpus_files(paths: list[str]) -> None:
    """ValueError naming the first text file that is missing, empty or not UTF-8 text."""
    for name in paths:
        path = Path(name)
        if path.is_dir():
            raise ValueError(f"--train_file {path} is a directory; give text files")
        if not path.is_file():
            raise ValueError(f"--train_file {path}: no such file")
        try:
            with path.open(encoding="utf-8") as handle:
                has_text = any(line.strip() for line in handle)
        except UnicodeDecodeError as err:
            raise ValueError(f"--train_file {path} is not UTF-8 text (byte {err.start}: "
                             f"{err.reason})") from err
        if not has_text:
            raise ValueError(f"--train_file {path} holds no text (empty or blank lines only); "
                             f"there is nothing to count")

"""Exact membership test for cfg3f: a sentence belongs when the grammar gives it a probability.

The chart parser is the inside algorithm of ``oe.cfg.inside`` (one level of the grammar at a
time, end positions of every symbol and start with their probabilities): a sentence is accepted
exactly when its probability is above zero, so membership and probability can never disagree.
A batch of thousands of 729-symbol sentences takes about a second on one core.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from oe.cfg.inside import logprob


def accepts_padded(symbols: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Membership of each row ``symbols[r, :lengths[r]]``; returns a bool array."""
    symbols = np.asarray(symbols)
    lengths = np.asarray(lengths)
    if symbols.ndim != 2 or lengths.shape != (symbols.shape[0],):
        raise ValueError("expected symbols [B, T] and lengths [B]")
    return accepts(symbols[r, : lengths[r]] for r in range(len(lengths)))


def accepts(sentences: Iterable[Sequence[int]]) -> np.ndarray:
    """Membership of each sentence (a sequence of ints; anything but 1, 2, 3 is rejected)."""
    return np.isfinite(logprob(list(sentences)))


def parse_line(line: str) -> np.ndarray | None:
    """Symbols of a text line of digits 1-3, or None if it holds anything else."""
    text = line.strip()
    if not text or any(ch not in "123" for ch in text):
        return None
    return np.frombuffer(text.encode(), dtype=np.uint8).astype(np.int64) - ord("0")

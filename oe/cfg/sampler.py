"""Sampling cfg3f sentences, each a pure function of (seed, sentence index).

Sentence i of stream s draws its rule choices from a counter-based generator keyed by (s, i),
so it is the same whichever process, worker or rank produces it, and any slice of the stream
can be made without producing what comes before it.
"""

from __future__ import annotations

import numba
import numpy as np

from oe.cfg.grammar import MAX_LENGTH, ROOT, rule_table

_N_RULES, _RULE_LEN, _RULE_BODY = rule_table()

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@numba.njit(cache=True)
def _mix64(z):
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True)
def _sample_into(seed, indices, n_rules, rule_len, rule_body, out, lengths):
    stack = np.empty(64, dtype=np.int64)
    for row in range(indices.shape[0]):
        # Two rounds of mixing decorrelate neighbouring (seed, index) keys.
        state = _mix64(_mix64(np.uint64(seed) * _GOLDEN) ^ np.uint64(indices[row]))
        top = 0
        stack[0] = ROOT
        pos = 0
        while top >= 0:
            symbol = stack[top]
            top -= 1
            if n_rules[symbol] == 0:
                out[row, pos] = symbol
                pos += 1
                continue
            state += _GOLDEN
            rule = np.int64(_mix64(state) % np.uint64(n_rules[symbol]))
            for c in range(rule_len[symbol, rule] - 1, -1, -1):
                top += 1
                stack[top] = rule_body[symbol, rule, c]
        lengths[row] = pos


def sample(seed: int, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sentences number ``indices`` of stream ``seed``.

    Returns ``(symbols, lengths)``: ``symbols[r, :lengths[r]]`` holds sentence ``indices[r]``
    as terminals 1..3, zero-padded to 729 columns.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    if indices.size and indices.min() < 0:
        raise ValueError("sentence indices must be >= 0")
    out = np.zeros((indices.shape[0], MAX_LENGTH), dtype=np.uint8)
    lengths = np.zeros(indices.shape[0], dtype=np.int64)
    _sample_into(np.uint64(seed), indices, _N_RULES, _RULE_LEN, _RULE_BODY, out, lengths)
    return out, lengths


def sample_range(seed: int, first: int, count: int) -> list[np.ndarray]:
    """Sentences ``first .. first+count-1`` of stream ``seed``, each a uint8 array."""
    out, lengths = sample(seed, np.arange(first, first + count))
    return [out[r, : lengths[r]].copy() for r in range(count)]

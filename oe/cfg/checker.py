"""Exact membership test for cfg3f: a bottom-up chart parser over the grammar's levels.

Because every rule of a level-k symbol rewrites into symbols of level k-1, the chart can be
filled one level at a time. For each symbol and start position it keeps the list of end
positions the symbol can derive. Level 1 is matched against the terminals directly; level k
composes the end lists of level k-1 along each rule. The root is only needed at position 0.
The work is proportional to the number of (start, end) spans, which the grammar keeps small,
so a batch of thousands of 729-symbol sentences takes well under a second on one core.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numba
import numpy as np

from oe.cfg.grammar import DEPTH, LEVELS, MAX_LENGTH, MIN_LENGTH, ROOT, rule_table

_N_RULES, _RULE_LEN, _RULE_BODY = rule_table()
# Level k symbols as rows, padded with -1; index of each symbol within its level.
_LEVEL_SYMBOLS = np.full((DEPTH + 1, 3), -1, dtype=np.int64)
_SLOT = np.zeros(max(max(level) for level in LEVELS) + 1, dtype=np.int64)
for _k, _level in enumerate(LEVELS):
    for _slot, _sym in enumerate(_level):
        _LEVEL_SYMBOLS[_k, _slot] = _sym
        _SLOT[_sym] = _slot


@numba.njit(cache=True)
def _accepts_one(s, n, n_rules, rule_len, rule_body, level_symbols, slot,
                 prev_ends, prev_count, cur_ends, cur_count, seen_tmp, seen_own, tmp):
    # Level 1: symbols whose rules are strings of terminals.
    cur_count[:, : n + 1] = 0
    for a in range(3):
        sym = level_symbols[1, a]
        for i in range(n):
            for r in range(n_rules[sym]):
                length = rule_len[sym, r]
                if i + length > n:
                    continue
                match = True
                for c in range(length):
                    if s[i + c] != rule_body[sym, r, c]:
                        match = False
                        break
                if match:
                    cur_ends[a, i, cur_count[a, i]] = i + length
                    cur_count[a, i] += 1
    token = 0
    for level in range(2, DEPTH + 1):
        prev_ends, cur_ends = cur_ends, prev_ends
        prev_count, cur_count = cur_count, prev_count
        cur_count[:, : n + 1] = 0
        last_start = n if level < DEPTH else 0
        for a in range(3):
            sym = level_symbols[level, a]
            if sym < 0:
                continue
            for i in range(last_start + 1):
                token += 1
                own = token  # marks ends already recorded for (sym, i)
                for r in range(n_rules[sym]):
                    b = slot[rule_body[sym, r, 0]]
                    c = slot[rule_body[sym, r, 1]]
                    # Ends after the first two children.
                    token += 1
                    n_tmp = 0
                    for x in range(prev_count[b, i]):
                        j = prev_ends[b, i, x]
                        for y in range(prev_count[c, j]):
                            e = prev_ends[c, j, y]
                            if seen_tmp[e] != token:
                                seen_tmp[e] = token
                                tmp[n_tmp] = e
                                n_tmp += 1
                    if rule_len[sym, r] == 3:
                        d = slot[rule_body[sym, r, 2]]
                        for x in range(n_tmp):
                            j = tmp[x]
                            for y in range(prev_count[d, j]):
                                e = prev_ends[d, j, y]
                                if seen_own[e] != own:
                                    seen_own[e] = own
                                    cur_ends[a, i, cur_count[a, i]] = e
                                    cur_count[a, i] += 1
                    else:
                        for x in range(n_tmp):
                            e = tmp[x]
                            if seen_own[e] != own:
                                seen_own[e] = own
                                cur_ends[a, i, cur_count[a, i]] = e
                                cur_count[a, i] += 1
    root = slot[ROOT]
    for x in range(cur_count[root, 0]):
        if cur_ends[root, 0, x] == n:
            return True
    return False


@numba.njit(cache=True)
def _accepts_batch(symbols, lengths, n_rules, rule_len, rule_body, level_symbols, slot, out):
    width = MAX_LENGTH + 1
    prev_ends = np.zeros((3, width, width), dtype=np.int16)
    cur_ends = np.zeros((3, width, width), dtype=np.int16)
    prev_count = np.zeros((3, width), dtype=np.int32)
    cur_count = np.zeros((3, width), dtype=np.int32)
    # Marks of the form "end e already listed under token t", so that no list needs clearing.
    seen_tmp = np.zeros(width, dtype=np.int64)
    seen_own = np.zeros(width, dtype=np.int64)
    tmp = np.zeros(width, dtype=np.int64)
    for row in range(lengths.shape[0]):
        n = lengths[row]
        if n < MIN_LENGTH or n > MAX_LENGTH:
            out[row] = False
            continue
        ok = True
        for i in range(n):
            if symbols[row, i] < 1 or symbols[row, i] > 3:
                ok = False
                break
        if not ok:
            out[row] = False
            continue
        seen_tmp[:] = 0
        seen_own[:] = 0
        out[row] = _accepts_one(symbols[row], n, n_rules, rule_len, rule_body, level_symbols,
                                slot, prev_ends, prev_count, cur_ends, cur_count, seen_tmp,
                                seen_own, tmp)


def accepts_padded(symbols: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Membership of each row ``symbols[r, :lengths[r]]``; returns a bool array."""
    symbols = np.ascontiguousarray(symbols, dtype=np.int64)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    if symbols.ndim != 2 or lengths.shape != (symbols.shape[0],):
        raise ValueError("expected symbols [B, T] and lengths [B]")
    if symbols.shape[1] < MAX_LENGTH + 1:
        symbols = np.pad(symbols, ((0, 0), (0, MAX_LENGTH + 1 - symbols.shape[1])))
    out = np.zeros(symbols.shape[0], dtype=np.bool_)
    _accepts_batch(symbols, lengths, _N_RULES, _RULE_LEN, _RULE_BODY, _LEVEL_SYMBOLS, _SLOT, out)
    return out


def accepts(sentences: Iterable[Sequence[int]]) -> np.ndarray:
    """Membership of each sentence (a sequence of ints; anything but 1, 2, 3 is rejected)."""
    sentences = [np.asarray(s, dtype=np.int64).ravel() for s in sentences]
    lengths = np.array([len(s) for s in sentences], dtype=np.int64)
    width = max(MAX_LENGTH + 1, int(lengths.max(initial=0)))
    padded = np.zeros((len(sentences), width), dtype=np.int64)
    for r, s in enumerate(sentences):
        padded[r, : len(s)] = s
    # Sentences longer than 729 are rejected on length alone, before any symbol is read.
    clipped = np.minimum(lengths, MAX_LENGTH + 1)
    return accepts_padded(padded[:, : MAX_LENGTH + 1], clipped)


def parse_line(line: str) -> np.ndarray | None:
    """Symbols of a text line of digits 1-3, or None if it holds anything else."""
    text = line.strip()
    if not text or any(ch not in "123" for ch in text):
        return None
    return np.frombuffer(text.encode(), dtype=np.uint8).astype(np.int64) - ord("0")

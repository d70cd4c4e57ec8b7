"""Exact sentence probabilities and longest viable prefixes of cfg3f, by the inside algorithm.

The sampler (``oe.cfg.sampler``) expands every non-terminal with one of its rules chosen
uniformly, so a derivation has probability prod 1 / n_rules(symbol) over its expansions, and a
sentence the sum over all its derivations. A sentence of 729 terminals has at most 364
expansions of at most 4 rules each, so the smallest derivation probability, 4^-364 ~ 1e-219,
still fits a float64: plain sums of products are exact to rounding, no log-space needed.

As in the checker, every rule of a level-k symbol rewrites into level k-1 symbols, so the chart
fills one level at a time: for each symbol and start position, the end positions it can derive
with their inside probabilities. The same pass computes ``reach[symbol, i]``, the end of the
longest stretch ``s[i:L]`` that is a prefix of some string the symbol derives: a rule's reach is
the reach of its first child, or, after a child that derives ``s[i:j]`` exactly, the reach of
the next child from ``j``.

Since ``-log P(s)`` summed over sentences is the code length of an ideal model (its
next-symbol probabilities multiply to P(s), EOS included), ``loss_floor`` is the least loss per
predicted token any model can reach on those sentences.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from oe.cfg.grammar import DEPTH, LEVELS, MAX_LENGTH, ROOT, rule_table

_N_RULES, _RULE_LEN, _RULE_BODY = rule_table()
_LEVEL_SYMBOLS = np.full((DEPTH + 1, 3), -1, dtype=np.int64)
_SLOT = np.zeros(max(max(level) for level in LEVELS) + 1, dtype=np.int64)
_LEVEL_OF = np.zeros_like(_SLOT)
for _k, _level in enumerate(LEVELS):
    for _slot, _sym in enumerate(_level):
        _LEVEL_SYMBOLS[_k, _slot] = _sym
        _SLOT[_sym] = _slot
        _LEVEL_OF[_sym] = _k


@numba.njit(cache=True)
def _inside_one(s, n, root, top, n_rules, rule_len, rule_body, level_symbols, slot,
                prev_ends, prev_prob, prev_count, prev_reach,
                cur_ends, cur_prob, cur_count, cur_reach, acc, listed, listed_own, tmp, tmp_prob):
    """(P(root derives s[:n]), longest prefix of s[:n] that root can start)."""
    # Level 1: rules whose bodies are terminals.
    cur_count[:, : n + 1] = 0
    for a in range(3):
        sym = level_symbols[1, a]
        for i in range(n + 1):
            reach = i
            for r in range(n_rules[sym]):
                length = rule_len[sym, r]
                matched = 0
                while matched < length and i + matched < n and s[i + matched] == rule_body[sym, r, matched]:
                    matched += 1
                reach = max(reach, i + matched)
                if matched == length:
                    cur_ends[a, i, cur_count[a, i]] = i + length
                    cur_prob[a, i, cur_count[a, i]] = 1.0 / n_rules[sym]
                    cur_count[a, i] += 1
            cur_reach[a, i] = reach
    token = 0
    for level in range(2, top + 1):
        prev_ends, cur_ends = cur_ends, prev_ends
        prev_prob, cur_prob = cur_prob, prev_prob
        prev_count, cur_count = cur_count, prev_count
        prev_reach, cur_reach = cur_reach, prev_reach
        cur_count[:, : n + 1] = 0
        last_start = n if level < top else 0
        for a in range(3):
            sym = level_symbols[level, a]
            if sym < 0 or (level == top and sym != root):
                continue
            for i in range(last_start + 1):
                token += 1
                own = token  # marks ends already listed for (sym, i)
                n_own = 0
                reach = i
                p_rule = 1.0 / n_rules[sym]
                for r in range(n_rules[sym]):
                    b = slot[rule_body[sym, r, 0]]
                    c = slot[rule_body[sym, r, 1]]
                    reach = max(reach, prev_reach[b, i])
                    # Ends after the first two children, with their summed probabilities.
                    token += 1
                    n_tmp = 0
                    for x in range(prev_count[b, i]):
                        j = prev_ends[b, i, x]
                        pb = prev_prob[b, i, x]
                        reach = max(reach, prev_reach[c, j])
                        for y in range(prev_count[c, j]):
                            e = prev_ends[c, j, y]
                            if listed[e] != token:
                                listed[e] = token
                                tmp[n_tmp] = e
                                n_tmp += 1
                                tmp_prob[e] = 0.0
                            tmp_prob[e] += pb * prev_prob[c, j, y]
                    if rule_len[sym, r] == 3:
                        d = slot[rule_body[sym, r, 2]]
                        for x in range(n_tmp):
                            j = tmp[x]
                            reach = max(reach, prev_reach[d, j])
                            for y in range(prev_count[d, j]):
                                e = prev_ends[d, j, y]
                                n_own = _add(e, p_rule * tmp_prob[j] * prev_prob[d, j, y], own,
                                             listed_own, acc, cur_ends, a, i, n_own)
                    else:
                        for x in range(n_tmp):
                            e = tmp[x]
                            n_own = _add(e, p_rule * tmp_prob[e], own, listed_own, acc,
                                         cur_ends, a, i, n_own)
                for x in range(n_own):
                    cur_prob[a, i, x] = acc[cur_ends[a, i, x]]
                cur_count[a, i] = n_own
                cur_reach[a, i] = reach
    top_slot = slot[root]
    for x in range(cur_count[top_slot, 0]):
        if cur_ends[top_slot, 0, x] == n:
            return cur_prob[top_slot, 0, x], cur_reach[top_slot, 0]
    return 0.0, cur_reach[top_slot, 0]


@numba.njit(cache=True)
def _add(e, p, own, listed, acc, ends, a, i, n_own):
    # A fresh token per (symbol, start) spares clearing ``listed``.
    if listed[e] != own:
        listed[e] = own
        acc[e] = 0.0
        ends[a, i, n_own] = e
        n_own += 1
    acc[e] += p
    return n_own


@numba.njit(cache=True)
def _inside_batch(symbols, lengths, root, top, n_rules, rule_len, rule_body, level_symbols,
                  slot, prob_out, reach_out):
    width = MAX_LENGTH + 2
    shape = (3, width, width)
    ends = (np.zeros(shape, dtype=np.int16), np.zeros(shape, dtype=np.int16))
    probs = (np.zeros(shape), np.zeros(shape))
    counts = (np.zeros((3, width), dtype=np.int32), np.zeros((3, width), dtype=np.int32))
    reaches = (np.zeros((3, width), dtype=np.int64), np.zeros((3, width), dtype=np.int64))
    acc = np.zeros(width)
    listed = np.zeros(width, dtype=np.int64)
    listed_own = np.zeros(width, dtype=np.int64)
    tmp = np.zeros(width, dtype=np.int64)
    tmp_prob = np.zeros(width)
    for row in range(lengths.shape[0]):
        n = lengths[row]
        listed[:] = 0
        listed_own[:] = 0
        prob_out[row], reach_out[row] = _inside_one(
            symbols[row], n, root, top, n_rules, rule_len, rule_body, level_symbols, slot,
            ends[0], probs[0], counts[0], reaches[0], ends[1], probs[1], counts[1], reaches[1],
            acc, listed, listed_own, tmp, tmp_prob)


def _run(sentences: Sequence[Sequence[int]], root: int) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, reaches) of each sentence; symbols outside 1-3 end the readable part."""
    top = int(_LEVEL_OF[root])
    if root not in _N_RULES.nonzero()[0] or top < 1:
        raise ValueError(f"root {root} is not a non-terminal of cfg3f")
    count = len(sentences)
    # One symbol past the longest sentence is enough to see that a longer line cannot match.
    symbols = np.zeros((count, MAX_LENGTH + 1), dtype=np.int64)
    lengths = np.zeros(count, dtype=np.int64)
    readable = np.zeros(count, dtype=np.int64)
    for r, s in enumerate(sentences):
        s = np.asarray(s, dtype=np.int64).ravel()
        bad = np.flatnonzero((s < 1) | (s > 3))
        readable[r] = bad[0] if bad.size else len(s)
        lengths[r] = min(readable[r], MAX_LENGTH + 1)
        symbols[r, : lengths[r]] = s[: lengths[r]]
    probs = np.zeros(count)
    reaches = np.zeros(count, dtype=np.int64)
    _inside_batch(symbols, lengths, root, top, _N_RULES, _RULE_LEN, _RULE_BODY, _LEVEL_SYMBOLS,
                  _SLOT, probs, reaches)
    whole = np.array([readable[r] == len(s) for r, s in enumerate(sentences)], dtype=bool)
    probs[~whole] = 0.0
    return probs, reaches


def logprob(sentences: Sequence[Sequence[int]], root: int = ROOT) -> np.ndarray:
    """Natural log of the probability that the sampler emits exactly each sentence (-inf: never).

    ``root`` other than cfg3f's start symbol gives the probabilities of what that symbol derives.
    """
    probs, _ = _run(sentences, root)
    with np.errstate(divide="ignore"):
        return np.log(probs)


def viable_prefix_length(sentences: Sequence[Sequence[int]], root: int = ROOT) -> np.ndarray:
    """Length of the longest prefix of each sentence that some cfg3f sentence begins with.

    Reading stops at the first symbol outside 1-3.
    """
    _, reaches = _run(sentences, root)
    return reaches


def loss_floor(sentences: Sequence[Sequence[int]]) -> float:
    """The least mean loss in nats per predicted token (each symbol and EOS) on ``sentences``."""
    if not len(sentences):
        raise ValueError("loss_floor needs at least one sentence")
    log_p = logprob(sentences)
    if np.isneginf(log_p).any():
        raise ValueError("loss_floor: some sentences are not cfg3f sentences")
    return float(-log_p.sum() / sum(len(s) + 1 for s in sentences))

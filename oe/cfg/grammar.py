"""The cfg3f grammar of "Physics of Language Models, Part 1", as data.

Every symbol of level k rewrites into 2 or 3 symbols of level k-1; level 0 holds the
terminals 1, 2, 3 and level 6 the root 22. A sentence therefore has between 2^6 = 64 and
3^6 = 729 terminals. This table is the single source of truth for the sampler, the checker
and the tests.
"""

from __future__ import annotations

import numpy as np

ROOT = 22
TERMINALS = (1, 2, 3)
DEPTH = 6
MIN_LENGTH = 2**DEPTH
MAX_LENGTH = 3**DEPTH

RULES: dict[int, tuple[tuple[int, ...], ...]] = {
    22: ((20, 21), (20, 19, 21), (21, 19, 19), (20, 20)),
    19: ((18, 16, 18), (17, 18), (18, 18)),
    20: ((16, 16), (16, 17), (17, 16, 18)),
    21: ((18, 17), (17, 16), (16, 17, 18), (16, 18)),
    16: ((15, 15), (13, 15, 13), (14, 13), (14, 14)),
    17: ((15, 14, 13), (14, 15), (15, 14)),
    18: ((14, 15, 13), (15, 13, 13), (13, 15)),
    13: ((11, 12), (12, 11, 12), (10, 12, 11)),
    14: ((10, 12), (12, 10, 12), (12, 11), (10, 12, 12)),
    15: ((10, 11, 11), (11, 11, 10), (10, 10), (12, 12, 11)),
    10: ((8, 9, 9), (9, 7, 9), (7, 9, 9)),
    11: ((8, 8), (9, 7), (9, 7, 7)),
    12: ((7, 9, 7), (9, 8), (8, 8, 9)),
    7: ((2, 2, 1), (3, 2, 2), (3, 1, 2), (3, 2)),
    8: ((3, 1, 1), (1, 2), (3, 3, 1)),
    9: ((1, 2, 1), (3, 3), (1, 1)),
}

LEVELS: tuple[tuple[int, ...], ...] = (
    TERMINALS,
    (7, 8, 9),
    (10, 11, 12),
    (13, 14, 15),
    (16, 17, 18),
    (19, 20, 21),
    (ROOT,),
)


def _check_layered() -> None:
    level_of = {s: k for k, syms in enumerate(LEVELS) for s in syms}
    for head, alternatives in RULES.items():
        for body in alternatives:
            if not 2 <= len(body) <= 3 or any(level_of[s] != level_of[head] - 1 for s in body):
                raise AssertionError(f"rule {head} -> {body} breaks the layered form")


_check_layered()

MAX_SYMBOL = max(RULES)
MAX_RULES = max(len(alts) for alts in RULES.values())


def rule_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rules as dense arrays for compiled code.

    Returns ``(n_rules[sym], rule_len[sym, r], rule_body[sym, r, 0:3])``, indexed by symbol id
    (terminals have zero rules).
    """
    n_rules = np.zeros(MAX_SYMBOL + 1, dtype=np.int64)
    rule_len = np.zeros((MAX_SYMBOL + 1, MAX_RULES), dtype=np.int64)
    rule_body = np.zeros((MAX_SYMBOL + 1, MAX_RULES, 3), dtype=np.int64)
    for head, alternatives in RULES.items():
        n_rules[head] = len(alternatives)
        for r, body in enumerate(alternatives):
            rule_len[head, r] = len(body)
            rule_body[head, r, : len(body)] = body
    return n_rules, rule_len, rule_body

"""A second cfg3f parser for the tests, by a different algorithm than oe.cfg.checker.

Top-down: a memoised recursive descent that returns, for a symbol and a start position, every
position where a derivation of the symbol can end. It reads the grammar as written in the
paper's notation (text below), not from oe.cfg.grammar, so a wrong rule there is caught.
"""

from __future__ import annotations

from functools import lru_cache

GRAMMAR_TEXT = """
22 -> 20 21 | 20 19 21 | 21 19 19 | 20 20
19 -> 18 16 18 | 17 18 | 18 18
20 -> 16 16 | 16 17 | 17 16 18
21 -> 18 17 | 17 16 | 16 17 18 | 16 18
16 -> 15 15 | 13 15 13 | 14 13 | 14 14
17 -> 15 14 13 | 14 15 | 15 14
18 -> 14 15 13 | 15 13 13 | 13 15
13 -> 11 12 | 12 11 12 | 10 12 11
14 -> 10 12 | 12 10 12 | 12 11 | 10 12 12
15 -> 10 11 11 | 11 11 10 | 10 10 | 12 12 11
10 -> 8 9 9 | 9 7 9 | 7 9 9
11 -> 8 8 | 9 7 | 9 7 7
12 -> 7 9 7 | 9 8 | 8 8 9
7 -> 2 2 1 | 3 2 2 | 3 1 2 | 3 2
8 -> 3 1 1 | 1 2 | 3 3 1
9 -> 1 2 1 | 3 3 | 1 1
"""


def _read_grammar(text: str) -> dict[int, list[tuple[int, ...]]]:
    rules: dict[int, list[tuple[int, ...]]] = {}
    for line in text.strip().splitlines():
        head, body = line.split("->")
        rules[int(head)] = [tuple(int(t) for t in alt.split()) for alt in body.split("|")]
    return rules


RULES = _read_grammar(GRAMMAR_TEXT)


def reference_accepts(sentence) -> bool:
    s = tuple(int(x) for x in sentence)

    @lru_cache(maxsize=None)
    def ends(symbol: int, start: int) -> frozenset[int]:
        if symbol not in RULES:
            return frozenset({start + 1}) if start < len(s) and s[start] == symbol else frozenset()
        found: set[int] = set()
        for body in RULES[symbol]:
            positions = {start}
            for child in body:
                positions = {e for p in positions for e in ends(child, p)}
                if not positions:
                    break
            found |= positions
        return frozenset(found)

    return len(s) in ends(22, 0)


def reference_probability(sentence, root: int = 22) -> float:
    """P(root derives the sentence) when every rule of a symbol is chosen uniformly, top-down."""
    s = tuple(int(x) for x in sentence)

    @lru_cache(maxsize=None)
    def inside(symbol: int, start: int) -> dict[int, float]:
        if symbol not in RULES:
            return {start + 1: 1.0} if start < len(s) and s[start] == symbol else {}
        found: dict[int, float] = {}
        for body in RULES[symbol]:
            positions = {start: 1.0 / len(RULES[symbol])}
            for child in body:
                after: dict[int, float] = {}
                for p, weight in positions.items():
                    for e, q in inside(child, p).items():
                        after[e] = after.get(e, 0.0) + weight * q
                positions = after
            for e, q in positions.items():
                found[e] = found.get(e, 0.0) + q
        return found

    return inside(root, 0).get(len(s), 0.0)


def reference_viable_prefix(sentence, root: int = 22) -> int:
    """The largest L such that s[:L] begins some string of ``root``, by a search over L."""
    s = tuple(int(x) for x in sentence)

    def viable(length: int) -> bool:
        @lru_cache(maxsize=None)
        def ends(symbol: int, start: int) -> frozenset[int]:
            # Exact derivations of s[start:e] with e <= length.
            if symbol not in RULES:
                return frozenset({start + 1}) if start < length and s[start] == symbol else frozenset()
            found: set[int] = set()
            for body in RULES[symbol]:
                positions = {start}
                for child in body:
                    positions = {e for p in positions for e in ends(child, p)}
                found |= positions
            return frozenset(found)

        @lru_cache(maxsize=None)
        def covers(symbol: int, start: int) -> bool:
            # Some string of the symbol begins with s[start:length].
            if start == length:
                return True
            if symbol not in RULES:
                return start + 1 == length and s[start] == symbol
            for body in RULES[symbol]:
                positions = {start}
                for child in body:
                    if any(covers(child, p) for p in positions):
                        return True
                    positions = {e for p in positions for e in ends(child, p)}
            return False

        return covers(root, 0)

    low, high = 0, len(s)  # viable(0) holds, and viability shrinks with the length
    while low < high:
        middle = (low + high + 1) // 2
        if viable(middle):
            low = middle
        else:
            high = middle - 1
    return low

"""Sentence probabilities and viable prefixes (oe.cfg.inside) against independent references."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest

from oe.cfg import sample_range
from oe.cfg.inside import logprob, loss_floor, viable_prefix_length
from tests.cfg.reference_parser import RULES, reference_probability, reference_viable_prefix


def derivations(symbol: int) -> dict[tuple[int, ...], float]:
    """Every string the symbol derives with its probability, by enumerating derivations."""
    if symbol not in RULES:
        return {(symbol,): 1.0}
    out: dict[tuple[int, ...], float] = {}
    for body in RULES[symbol]:
        for parts in itertools.product(*(derivations(c).items() for c in body)):
            string = tuple(t for part, _ in parts for t in part)
            p = math.prod(q for _, q in parts) / len(RULES[symbol])
            out[string] = out.get(string, 0.0) + p
    return out


@pytest.mark.parametrize("root", [7, 8, 9, 10, 11, 12])
def test_logprob_equals_enumerated_derivations_of_a_sub_grammar(root):
    strings = derivations(root)
    assert sum(strings.values()) == pytest.approx(1.0)
    sentences = list(strings)
    expected = np.log([strings[s] for s in sentences])
    np.testing.assert_allclose(logprob(sentences, root=root), expected, rtol=1e-12)
    # A string of a possible length that the symbol never derives has probability 0.
    lengths = {len(s) for s in sentences}
    foreign = next(c for n in sorted(lengths) for c in itertools.product((1, 2, 3), repeat=n)
                   if c not in strings)
    assert logprob([foreign], root=root)[0] == -math.inf


def test_logprob_of_sampled_sentences_matches_a_top_down_reference():
    sentences = sample_range(seed=7, first=0, count=6)
    ours = logprob(sentences)
    reference = np.log([reference_probability(s) for s in sentences])
    np.testing.assert_allclose(ours, reference, rtol=1e-9)
    assert np.all(np.isfinite(ours))


def test_loss_floor_of_sampled_sentences_is_near_the_grammars_entropy():
    sentences = sample_range(seed=3, first=0, count=300)
    # About 0.74 nats per predicted token for cfg3f (symbols and EOS).
    assert 0.70 < loss_floor(sentences) < 0.78


def _mutate(sentence: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    s = sentence.copy()
    where = rng.integers(len(s))
    s[where] = 1 + (s[where] + rng.integers(1, 3) - 1) % 3
    return s


def test_viable_prefix_matches_a_top_down_reference_on_mutated_sentences():
    rng = np.random.default_rng(0)
    sentences = sample_range(seed=11, first=0, count=6)
    mutated = [_mutate(s, rng) for s in sentences] + [s[: len(s) // 2] for s in sentences[:2]]
    ours = viable_prefix_length(mutated)
    assert list(ours) == [reference_viable_prefix(s) for s in mutated]
    assert list(viable_prefix_length(sentences)) == [len(s) for s in sentences]


def test_bad_symbols_and_lengths_are_never_sentences():
    good = sample_range(seed=0, first=0, count=1)[0]
    lines = [[], [1, 2, 7, 1], np.concatenate([good, good]), [4] * 80]
    assert np.all(np.isneginf(logprob(lines)))
    reach = viable_prefix_length(lines)
    assert reach[0] == 0 and reach[3] == 0
    assert reach[1] <= 2  # reading stops at the foreign symbol
    assert len(good) <= reach[2] <= 729


def _cli(*args: str, stdin: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oe", "cfg", *args], input=stdin,
                          capture_output=True, text=True, check=False)


def test_command_line_logprob_and_prefix():
    sentence = "".join(map(str, sample_range(seed=5, first=0, count=1)[0]))
    stdin = f"{sentence}\n\n12x3\n{sentence[:-1]}\n"
    out = _cli("logprob", stdin=stdin)
    assert out.returncode == 0, out.stderr
    values = [float(v) for v in out.stdout.split()]
    assert values[0] == pytest.approx(logprob([[int(c) for c in sentence]])[0])
    assert values[1:3] == [-math.inf, -math.inf]
    prefix = _cli("check", "--prefix", stdin=stdin)
    assert prefix.returncode == 0, prefix.stderr
    assert [int(v) for v in prefix.stdout.split()] == [len(sentence), 0, 0, len(sentence) - 1]


def test_command_line_missing_file_names_it():
    out = _cli("logprob", "/nonexistent/x.txt", stdin="")
    assert out.returncode == 2 and "/nonexistent/x.txt" in out.stderr

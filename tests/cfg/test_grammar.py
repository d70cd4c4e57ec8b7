"""The cfg3f sampler and checker, against a second parser and against their contracts."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from oe.cfg import MAX_LENGTH, MIN_LENGTH, accepts, accepts_padded, sample, sample_range
from tests.cfg.reference_parser import RULES as REFERENCE_RULES
from tests.cfg.reference_parser import reference_accepts


def test_grammar_table_matches_the_paper_text():
    from oe.cfg.grammar import RULES

    assert {h: set(alts) for h, alts in RULES.items()} == {
        h: set(alts) for h, alts in REFERENCE_RULES.items()
    }
    assert (15, 14, 13) in RULES[17]  # the rule an earlier implementation lost


def test_sampled_sentences_are_valid_and_in_range():
    symbols, lengths = sample(7, np.arange(3000))
    assert accepts_padded(symbols, lengths).all()
    assert lengths.min() >= MIN_LENGTH and lengths.max() <= MAX_LENGTH
    assert set(np.unique(symbols[symbols > 0])) <= {1, 2, 3}


def test_sentence_is_a_function_of_seed_and_index():
    whole = sample_range(3, 0, 50)
    part = sample_range(3, 20, 10)
    for a, b in zip(whole[20:30], part):
        np.testing.assert_array_equal(a, b)
    shuffled = np.array([41, 2, 17])
    symbols, lengths = sample(3, shuffled)
    for row, index in enumerate(shuffled):
        np.testing.assert_array_equal(symbols[row, : lengths[row]], whole[index])
    other = sample_range(4, 0, 50)
    assert sum(np.array_equal(a, b) for a, b in zip(whole, other)) < 5


def _mutations(rng, sentence):
    s = list(sentence)
    pos = int(rng.integers(len(s)))
    kind = rng.integers(3)
    if kind == 0:
        s[pos] = int(rng.choice([t for t in (1, 2, 3) if t != s[pos]]))
    elif kind == 1:
        s.insert(pos, int(rng.integers(1, 4)))
    else:
        del s[pos]
    return s


def test_checker_agrees_with_reference_parser():
    rng = np.random.default_rng(0)
    valid = sample_range(11, 0, 60)
    cases = list(valid)
    cases += [_mutations(rng, s) for s in valid for _ in range(4)]
    cases += [s[: int(rng.integers(1, len(s)))] for s in valid]  # truncations
    cases += [rng.integers(1, 4, size=int(rng.integers(1, 200))).tolist() for _ in range(100)]
    cases += [rng.integers(1, 4, size=int(rng.integers(64, 730))).tolist() for _ in range(40)]
    ours = accepts(cases)
    theirs = np.array([reference_accepts(c) for c in cases])
    np.testing.assert_array_equal(ours, theirs)
    # The mutation set holds both verdicts, so agreement is not trivial.
    mutated = theirs[60:300]
    assert 0 < mutated.sum() < len(mutated)


def test_checker_rejects_foreign_symbols_and_lengths():
    s = sample_range(0, 0, 1)[0]
    bad = s.copy()
    bad[5] = 4
    assert accepts([s]).tolist() == [True]
    assert accepts([bad, [], s[:63], np.concatenate([s, s, s, s])]).tolist() == [False] * 4


def _run(args, stdin=None):
    return subprocess.run([sys.executable, "-m", "oe", "cfg", *args], input=stdin,
                          capture_output=True, text=True, timeout=120, check=False)


def test_command_line_sample_then_check(tmp_path):
    sampled = _run(["sample", "--n", "50", "--seed", "5"])
    assert sampled.returncode == 0
    lines = sampled.stdout.splitlines()
    assert len(lines) == 50 and all(set(line) <= set("123") for line in lines)
    mutated = lines[0][:10] + ("1" if lines[0][10] != "1" else "2") + lines[0][11:]
    text = "\n".join(lines + ["12a3", "", mutated]) + "\n"
    (tmp_path / "in.txt").write_text(text)
    checked = _run(["check", str(tmp_path / "in.txt")])
    assert checked.returncode == 0
    verdicts = checked.stdout.splitlines()
    assert verdicts[:50] == ["valid"] * 50
    assert verdicts[50:52] == ["invalid", "invalid"]
    assert verdicts[52] == ("valid" if reference_accepts([int(c) for c in mutated]) else "invalid")
    assert "valid" in checked.stderr
    piped = _run(["check", "-"], stdin=text)
    assert piped.stdout == checked.stdout


def test_command_line_missing_file():
    result = _run(["check", "/nonexistent/file.txt"])
    assert result.returncode == 2 and "no such file" in result.stderr


@pytest.mark.parametrize("n", [0, 1])
def test_sample_count_edge_cases(n):
    assert len(_run(["sample", "--n", str(n)]).stdout.splitlines()) == n

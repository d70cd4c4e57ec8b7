"""ngram_ids: exactness against big integers, range, determinism, resets, incremental form;
ngram_windows: the tokens it reads; the key modulus."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from oe.models.ngram import (KEY_MODULUS, MAX_MODULUS, NgramHash, hashed_ids, is_prime,
                             last_hashed_ids, last_ngram_ids, ngram_ids, ngram_windows,
                             primes_from, xor_multipliers)


def reference(tokens, order, vocab, modulus, pad=0, docs=None):
    """Python big-integer arithmetic, no modular tricks."""
    out = []
    for b, row in enumerate(tokens):
        ids = []
        for i in range(len(row)):
            total = 0
            for j in range(1, order + 1):
                p = i - j + 1
                same_doc = docs is None or (p >= 0 and docs[b][p] == docs[b][i])
                x = row[p] if p >= 0 and same_doc else pad
                total += x * vocab ** (j - 1)
            ids.append(total % modulus)
        out.append(ids)
    return out


@pytest.mark.parametrize(
    "vocab,order,modulus",
    [(6, 3, 1009), (50257, 5, 12_800_001), (50257, 5, 12_800_003), (2**31 - 1, 8, 2**40 - 1),
     (50257, 2, 7), (3, 4, 1)],
)
def test_matches_big_integer_reference(vocab, order, modulus):
    gen = torch.Generator().manual_seed(order)
    tokens = torch.randint(0, vocab, (3, 17), generator=gen)
    got = ngram_ids(tokens, order, vocab, modulus)
    assert got.tolist() == reference(tokens.tolist(), order, vocab, modulus)


@settings(max_examples=60, deadline=None)
@given(
    vocab=st.integers(2, 2**31 - 1),
    order=st.integers(1, 8),
    modulus=st.integers(1, 2**40 - 1),
    data=st.data(),
)
def test_range_and_agreement_property(vocab, order, modulus, data):
    length = data.draw(st.integers(1, 12))
    rows = data.draw(st.lists(st.lists(st.integers(0, vocab - 1), min_size=length,
                                       max_size=length), min_size=1, max_size=3))
    tokens = torch.tensor(rows)
    got = ngram_ids(tokens, order, vocab, modulus)
    assert got.dtype == torch.int64
    assert bool(((got >= 0) & (got < modulus)).all())
    assert got.tolist() == reference(rows, order, vocab, modulus)


def test_deterministic_across_processes():
    code = (
        "import torch; from oe.models.ngram import ngram_ids; "
        "t = torch.arange(40).reshape(2, 20) * 7919 % 50257; "
        "print(ngram_ids(t, 5, 50257, 12_800_001).sum().item())"
    )
    outputs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, timeout=120).stdout
        for _ in range(2)
    }
    tokens = torch.arange(40).reshape(2, 20) * 7919 % 50257
    assert outputs == {f"{ngram_ids(tokens, 5, 50257, 12_800_001).sum().item()}\n"}


def test_row_start_and_document_boundaries_read_as_pad():
    tokens = torch.tensor([[5, 1, 2, 3, 4, 2]])
    docs = torch.tensor([[0, 0, 0, 1, 1, 1]])
    vocab, pad = 7, 6
    got = ngram_ids(tokens, 3, vocab, 10**9, pad_id=pad, doc_ids=docs)
    assert got.tolist() == reference(tokens.tolist(), 3, vocab, 10**9, pad, docs.tolist())
    # Position 3 starts document 1: its 3-gram is (pad, pad, 3).
    assert got[0, 3].item() == 3 + pad * vocab + pad * vocab**2
    # Without doc ids it reaches back into document 0.
    assert ngram_ids(tokens, 3, vocab, 10**9, pad_id=pad)[0, 3].item() == 3 + 2 * 7 + 1 * 49


def test_incremental_equals_full():
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 50257, (4, 30), generator=gen)
    for order in (2, 3, 5):
        full = ngram_ids(tokens, order, 50257, 12_800_001)
        for t in range(30):
            recent = tokens[:, max(0, t - order + 1) : t + 1]
            if recent.shape[1] < order:  # a row that began recently: left pad
                recent = torch.cat([torch.zeros(4, order - recent.shape[1], dtype=torch.long),
                                    recent], dim=1)
            step = last_ngram_ids(recent, order, 50257, 12_800_001)
            assert torch.equal(step, full[:, t])


def test_bad_arguments_are_named():
    tokens = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="order"):
        ngram_ids(tokens, 9, 10, 10)
    with pytest.raises(ValueError, match="modulus"):
        ngram_ids(tokens, 2, 10, 2**40)
    with pytest.raises(ValueError, match="vocab_size"):
        ngram_ids(tokens, 2, 2**31, 10)
    with pytest.raises(ValueError, match="doc_ids"):
        ngram_ids(tokens, 2, 10, 10, doc_ids=torch.zeros(1, 4))


def test_windows_hold_the_tokens_read_with_resets():
    tokens = torch.tensor([[5, 6, 7, 8, 9]])
    docs = torch.tensor([[0, 0, 1, 1, 1]])
    windows = ngram_windows(tokens, 3, 0, docs)
    assert windows.tolist() == [[[0, 0, 5], [0, 5, 6], [0, 0, 7], [0, 7, 8], [7, 8, 9]]]
    # An order longer than the row reads pad_id before its start.
    assert ngram_windows(tokens, 7, 1)[0, -1].tolist() == [1, 1, 5, 6, 7, 8, 9]
    for order in (1, 3, 7):
        assert torch.equal(ngram_windows(tokens, order, 0, docs)[..., -1], tokens)


def test_key_modulus_is_a_prime_that_ngram_ids_accepts():
    # Prime: no power of a vocabulary size below it is 0 modulo it, so every token weighs.
    assert KEY_MODULUS < MAX_MODULUS
    assert all(KEY_MODULUS % p for p in range(2, math.isqrt(KEY_MODULUS) + 1))


# -- the hash families -------------------------------------------------------------------------

def xor_reference(tokens, multipliers, modulus, pad=0, docs=None):
    """Multiply-XOR in plain Python integers: XOR over the window of x * a_j, then mod p."""
    out = []
    for b, row in enumerate(tokens):
        ids = []
        for i in range(len(row)):
            mixed = 0
            for j, a in enumerate(multipliers):
                p = i - j
                same_doc = docs is None or (p >= 0 and docs[b][p] == docs[b][i])
                mixed ^= (row[p] if p >= 0 and same_doc else pad) * a
            ids.append(mixed % modulus)
        out.append(ids)
    return out


def test_multipliers_are_odd_fixed_and_distinct_per_head():
    first, second = xor_multipliers(3, 0), xor_multipliers(3, 1)
    assert all(a % 2 == 1 and 0 < a < 2**31 for a in first + second)
    assert first != second and len(set(first)) == 3
    assert xor_multipliers(3, 0) == first  # no random state


def test_primes_from_finds_the_next_primes():
    assert primes_from(12_800_001, 3) == [12_800_009, 12_800_017, 12_800_041]
    assert primes_from(1, 4) == [2, 3, 5, 7]
    assert [n for n in range(200) if is_prime(n)] == [
        n for n in range(2, 200) if all(n % d for d in range(2, n))]


@pytest.mark.parametrize("vocab,order,modulus", [(6, 3, 1009), (50257, 5, 12_800_009),
                                                 (2**31 - 1, 8, 2**40 - 87), (50257, 2, 7)])
def test_multiply_xor_matches_a_plain_python_reference(vocab, order, modulus):
    gen = torch.Generator().manual_seed(order)
    tokens = torch.randint(0, vocab, (3, 17), generator=gen)
    docs = torch.tensor([[0] * 5 + [1] * 7 + [2] * 5, [0] * 17, [3] * 2 + [4] * 15])
    spec = NgramHash("multiply_xor", order, modulus, xor_multipliers(order, 5))
    for d in (None, docs):
        got = hashed_ids(tokens, spec, vocab, pad_id=1, doc_ids=d)
        expected = xor_reference(tokens.tolist(), spec.multipliers, modulus, 1,
                                 None if d is None else d.tolist())
        assert got.tolist() == expected


def test_polynomial_family_is_the_paper_id():
    tokens = torch.randint(0, 50257, (2, 9), generator=torch.Generator().manual_seed(3))
    docs = torch.tensor([[0] * 4 + [1] * 5, [0] * 9])
    spec = NgramHash("polynomial", 3, 12_800_001)
    assert torch.equal(hashed_ids(tokens, spec, 50257, 0, docs),
                       ngram_ids(tokens, 3, 50257, 12_800_001, 0, docs))


@pytest.mark.parametrize("family", ["polynomial", "multiply_xor"])
def test_each_family_incremental_equals_full(family):
    tokens = torch.randint(0, 50257, (3, 20), generator=torch.Generator().manual_seed(4))
    for order in (2, 3, 5):
        spec = NgramHash(family, order, 12_800_009,
                         xor_multipliers(order, order) if family == "multiply_xor" else ())
        full = hashed_ids(tokens, spec, 50257)
        padded = torch.cat([torch.zeros(3, order - 1, dtype=torch.long), tokens], dim=1)
        for t in range(20):
            assert torch.equal(last_hashed_ids(padded[:, t : t + order], spec, 50257), full[:, t])


def test_multiply_xor_is_deterministic_across_processes():
    code = (
        "import torch; from oe.models.ngram import NgramHash, hashed_ids, xor_multipliers; "
        "t = torch.arange(40).reshape(2, 20) * 7919 % 50257; "
        "s = NgramHash('multiply_xor', 4, 12_800_009, xor_multipliers(4, 2)); "
        "print(hashed_ids(t, s, 50257).tolist())"
    )
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, timeout=120).stdout for _ in range(2)}
    tokens = torch.arange(40).reshape(2, 20) * 7919 % 50257
    spec = NgramHash("multiply_xor", 4, 12_800_009, xor_multipliers(4, 2))
    assert outputs == {f"{hashed_ids(tokens, spec, 50257).tolist()}\n"}


def test_an_unknown_family_is_named():
    with pytest.raises(ValueError, match="unknown hash family 'crc'"):
        hashed_ids(torch.zeros(1, 3, dtype=torch.long), NgramHash("crc", 2, 7), 10)

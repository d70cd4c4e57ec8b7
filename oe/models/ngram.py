"""n-gram ids: the one module that training, generation and evaluation share.

Two hash families map the n-gram ending at position i to a table row:

- ``polynomial`` (the paper's): g_n(i) = sum_{j=1..n} x_{i-j+1} * V^(j-1)  (mod m), with the
  current token at weight 1. All arithmetic is done modulo m in int64 with a split
  multiplication, so it is exact for V < 2^31, order <= 8 and m < 2^40.
- ``multiply_xor`` (Engram's): h(i) = XOR_{j=1..n} (x_{i-j+1} * a_j)  (mod p), with odd
  multipliers a_j < 2^31 drawn per table (so per head) from a fixed integer mixer, and p prime.
  Products stay below 2^62, so int64 holds them exactly.

Either way, positions before the start of a row, or in an earlier document of a packed row, read
as ``pad_id``, and the ids depend on nothing but the tokens and the table (no random state), so
every process computes the same ones. ``ngram_windows`` gives the tokens themselves, read the
same way. ``ngram_signs`` gives the sign trick's fixed +1/-1 per n-gram and table (a second hash
of the n-gram's exact key), again from the tokens alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MAX_VOCAB = 2**31
MAX_MODULUS = 2**40
MAX_ORDER = 8
_SPLIT = 20  # a 40-bit factor is split into two 20-bit halves
# A near-unique key of an n-gram, where an exact match is wanted (frequent-n-gram lookup,
# collision statistics): its id modulo this prime just below MAX_MODULUS. Being prime, it
# divides no power of a vocabulary size below it, so no earlier token's weight is ever 0.
KEY_MODULUS = 2**40 - 87


def _mulmod(x: torch.Tensor, c: int, m: int) -> torch.Tensor:
    """(x * c) mod m for 0 <= x < 2^31 and 0 <= c < m < 2^40, without int64 overflow."""
    c_hi, c_lo = c >> _SPLIT, c & ((1 << _SPLIT) - 1)
    high = (x * c_hi) % m  # < 2^51 before the reduction
    return (high * (1 << _SPLIT) + x * c_lo) % m  # < 2^60 + 2^51


def _check(order: int, vocab_size: int, modulus: int, pad_id: int) -> None:
    if not 1 <= order <= MAX_ORDER:
        raise ValueError(f"order must be in 1..{MAX_ORDER}, got {order}")
    if not 1 <= vocab_size < MAX_VOCAB:
        raise ValueError(f"vocab_size must be in 1..2^31-1, got {vocab_size}")
    if not 1 <= modulus < MAX_MODULUS:
        raise ValueError(f"modulus must be in 1..2^40-1, got {modulus}")
    if not 0 <= pad_id < vocab_size:
        raise ValueError(f"pad_id must be a token id in 0..{vocab_size - 1}, got {pad_id}")


def _check_tokens(tokens: torch.Tensor, doc_ids: torch.Tensor | None) -> None:
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be [B, T], got shape {tuple(tokens.shape)}")
    if doc_ids is not None and doc_ids.shape != tokens.shape:
        raise ValueError(f"doc_ids {tuple(doc_ids.shape)} must match tokens {tuple(tokens.shape)}")


def earlier_tokens(tokens: torch.Tensor, shift: int, pad_id: int,
                   doc_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The token ``shift`` positions back from each position of ``tokens`` [B, T]; ``pad_id``
    where that lies before the start of the row or, with ``doc_ids`` [B, T], in another document."""
    if shift == 0:
        return tokens
    earlier = torch.full_like(tokens, pad_id)
    if shift < tokens.shape[1]:
        earlier[:, shift:] = tokens[:, :-shift]
        if doc_ids is not None:
            crosses = torch.ones_like(tokens, dtype=torch.bool)
            crosses[:, shift:] = doc_ids[:, :-shift] != doc_ids[:, shift:]
            earlier = earlier.masked_fill(crosses, pad_id)
    return earlier


def ngram_ids(
    tokens: torch.Tensor,
    order: int,
    vocab_size: int,
    modulus: int,
    pad_id: int = 0,
    doc_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Row ids of the order-``order`` n-grams ending at each position of ``tokens`` [B, T]."""
    _check(order, vocab_size, modulus, pad_id)
    _check_tokens(tokens, doc_ids)
    tokens = tokens.long()
    ids = tokens % modulus
    power = 1  # V^(j-1) mod m
    for j in range(2, order + 1):
        power = (power * vocab_size) % modulus
        earlier = earlier_tokens(tokens, j - 1, pad_id, doc_ids)
        ids = (ids + _mulmod(earlier, power, modulus)) % modulus
    return ids


def ngram_windows(tokens: torch.Tensor, order: int, pad_id: int,
                  doc_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The n-gram [B, T, order] ending at each position of ``tokens`` [B, T], oldest token first,
    read as ``ngram_ids`` reads it (``pad_id`` before the row's start or the document's)."""
    shifts = range(order - 1, -1, -1)
    return torch.stack([earlier_tokens(tokens, s, pad_id, doc_ids) for s in shifts], dim=-1)


def last_ngram_ids(
    recent: torch.Tensor, order: int, vocab_size: int, modulus: int, pad_id: int = 0
) -> torch.Tensor:
    """Ids [B] of the n-gram ending at the newest token, from the last tokens ``recent`` [B, L].

    Generation keeps only the last ``order - 1`` tokens before the new one; rows that started
    fewer tokens ago are left-padded with ``pad_id``, which reads exactly as the start of a row.
    """
    if recent.dim() != 2 or recent.shape[1] < 1:
        raise ValueError(f"recent must be [B, L>=1], got shape {tuple(recent.shape)}")
    return ngram_ids(recent[:, -order:], order, vocab_size, modulus, pad_id)[:, -1]


# -- hash families ------------------------------------------------------------------------------

HASH_FAMILIES = ("polynomial", "multiply_xor")
_MULTIPLIER_BITS = 31  # a_j < 2^31 and x < 2^31: every product fits in int64


@dataclass(frozen=True)
class NgramHash:
    """How one table maps n-grams to rows: family, order, number of rows, multiplier keys."""

    family: str
    order: int
    modulus: int
    multipliers: tuple[int, ...] = ()  # multiply_xor: a_1 (current token) .. a_order


def _splitmix64(x: int) -> int:
    """A fixed 64-bit integer mixer (SplitMix64's finaliser): the same numbers everywhere."""
    x = (x + 0x9E3779B97F4A7C15) & (2**64 - 1)
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return x ^ (x >> 31)


def xor_multipliers(order: int, key: int) -> tuple[int, ...]:
    """Odd multipliers a_1..a_order (each < 2^31) of the multiply-XOR table number ``key``."""
    return tuple(
        (_splitmix64((key << 8) + j) >> (64 - _MULTIPLIER_BITS)) | 1 for j in range(order)
    )


def is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin, exact for n < 3.3e24 (far beyond MAX_MODULUS)."""
    if n < 2:
        return False
    bases = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    for p in bases:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def primes_from(start: int, count: int) -> list[int]:
    """The ``count`` smallest primes >= ``start``."""
    primes, n = [], max(start, 2)
    while len(primes) < count:
        if is_prime(n):
            primes.append(n)
        n += 1
    return primes


def multiply_xor_ids(
    tokens: torch.Tensor,
    multipliers: tuple[int, ...],
    modulus: int,
    pad_id: int = 0,
    doc_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Row ids of the multiply-XOR hash of the n-grams (order ``len(multipliers)``) ending at
    each position of ``tokens`` [B, T]."""
    _check(len(multipliers), MAX_VOCAB - 1, modulus, pad_id)
    _check_tokens(tokens, doc_ids)
    tokens = tokens.long()
    mixed = tokens * multipliers[0]
    for j, a in enumerate(multipliers[1:], start=1):
        mixed = mixed ^ (earlier_tokens(tokens, j, pad_id, doc_ids) * a)
    return mixed % modulus


def hashed_ids(tokens: torch.Tensor, spec: NgramHash, vocab_size: int, pad_id: int = 0,
               doc_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Row ids [B, T] of table ``spec`` for the n-grams ending at each position of ``tokens``."""
    if spec.family == "polynomial":
        return ngram_ids(tokens, spec.order, vocab_size, spec.modulus, pad_id, doc_ids)
    if spec.family == "multiply_xor":
        _check(spec.order, vocab_size, spec.modulus, pad_id)  # the vocabulary bounds the tokens
        return multiply_xor_ids(tokens, spec.multipliers, spec.modulus, pad_id, doc_ids)
    raise ValueError(f"unknown hash family {spec.family!r}; expected one of {', '.join(HASH_FAMILIES)}")


def last_hashed_ids(recent: torch.Tensor, spec: NgramHash, vocab_size: int,
                    pad_id: int = 0) -> torch.Tensor:
    """Ids [B] of table ``spec`` for the n-gram ending at the newest token of ``recent`` [B, L]
    (the incremental form of ``hashed_ids``, as ``last_ngram_ids`` is of ``ngram_ids``)."""
    if recent.dim() != 2 or recent.shape[1] < 1:
        raise ValueError(f"recent must be [B, L>=1], got shape {tuple(recent.shape)}")
    return hashed_ids(recent[:, -spec.order:], spec, vocab_size, pad_id)[:, -1]


# -- the sign trick -----------------------------------------------------------------------------

SIGN_PRIME = 2**31 - 1  # the sign hash works modulo this prime; keys stay below it
_KEY_HALF = 20  # an n-gram's exact key (< 2^40) enters the sign hash as two 20-bit halves


def sign_key(table: int) -> tuple[int, int, int]:
    """(a, b, c) of the sign hash of table number ``table``: 1 <= a, b < P and 0 <= c < P, from
    the fixed integer mixer (the same numbers everywhere)."""
    a, b, c = (_splitmix64((0x5E1 << 40) + (table << 2) + j) % SIGN_PRIME for j in range(3))
    return max(a, 1), max(b, 1), c


def ngram_signs(tokens: torch.Tensor, order: int, vocab_size: int, key: tuple[int, int, int],
                pad_id: int = 0, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
    """+1 or -1 [B, T] for the order-``order`` n-gram ending at each position of ``tokens``.

    A second hash of the n-gram's exact key (its polynomial id modulo KEY_MODULUS, whatever the
    table's own hash): s = 1 - 2 * ((a lo + b hi + c) mod P mod 2), lo and hi the key's 20-bit
    halves, so n-grams that share a row get independent signs (products < 2^51: exact in int64).
    """
    exact = ngram_ids(tokens, order, vocab_size, KEY_MODULUS, pad_id, doc_ids)
    a, b, c = key
    low, high = exact & ((1 << _KEY_HALF) - 1), exact >> _KEY_HALF
    return 1 - 2 * ((low * a + high * b + c) % SIGN_PRIME % 2)


def last_ngram_signs(recent: torch.Tensor, order: int, vocab_size: int, key: tuple[int, int, int],
                     pad_id: int = 0) -> torch.Tensor:
    """Signs [B] of the n-gram ending at the newest token of ``recent`` [B, L] (the incremental
    form of ``ngram_signs``)."""
    if recent.dim() != 2 or recent.shape[1] < 1:
        raise ValueError(f"recent must be [B, L>=1], got shape {tuple(recent.shape)}")
    return ngram_signs(recent[:, -order:], order, vocab_size, key, pad_id)[:, -1]

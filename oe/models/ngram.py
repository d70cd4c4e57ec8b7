"""n-gram ids: the one function that training, generation and evaluation share.

For order n, the id at position i is  g_n(i) = sum_{j=1..n} x_{i-j+1} * V^(j-1)  (mod m),
with the current token at weight 1. Positions before the start of a row, or in an earlier
document of a packed row, read as ``pad_id``. All arithmetic is done modulo m in int64 with a
split multiplication, so it is exact for V < 2^31, order <= 8 and m < 2^40. ``ngram_windows``
gives the tokens themselves, read the same way.
"""

from __future__ import annotations

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
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be [B, T], got shape {tuple(tokens.shape)}")
    if doc_ids is not None and doc_ids.shape != tokens.shape:
        raise ValueError(f"doc_ids {tuple(doc_ids.shape)} must match tokens {tuple(tokens.shape)}")
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

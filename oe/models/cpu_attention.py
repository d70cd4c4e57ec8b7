"""Causal attention in bf16 for the CPU, for the short documents of packed rows.

PyTorch's CPU flash kernel does not speed up under bf16 at small head sizes, and for rows shorter
than its key block (512) it scores every query against every key, masked or not: the causal half
is computed and thrown away. Matrix products in bf16, on the other hand, run at close to the
core's bf16 peak (AVX512-BF16 or AMX), several times the fp32 kernel's rate. This kernel spends
its work there:

- the queries are cut into chunks of about ``CHUNK_ROWS`` rows; a chunk scores only the keys up to
  its last query, so about half of the causal square's upper part is never computed, and each
  chunk's scores stay small enough to stay in cache;
- scores and the products with the values are bf16 matrix products (fp32 accumulation inside
  the product, as under autocast on a GPU); the softmax runs in fp32 and its probabilities are
  rounded to bf16 once, for the product with the values and for the backward;
- the backward is written out (the probabilities are kept, bf16, rather than recomputed):
  dV = P^T dY, dS = P * (dY V^T - rowsum(dY * Y)), dQ = dS K, dK = dS^T Q, with the key and value
  gradients of overlapping chunks summed in fp32.

Exact attention (no approximation), at bf16's rounding: outputs and gradients within about 2% of
the largest fp32 value on random inputs, as the flash kernel's in bf16. Its memory is the
flash kernel's plus the kept probabilities: bf16, per head and document the chunks' share of the
square (3/4 of it for 2 chunks, 2/3 for 3).
"""

from __future__ import annotations

import torch

# On a packed cfg3f step (2.4M model, batch 64, one thread), chunks of 64 to 192 rows ran alike
# within noise (7,200-7,600 useful tokens/s); one chunk per document 7% slower.
CHUNK_ROWS = 128

# One causal square per dtype, grown as longer documents come; every chunk's mask is a view of it.
_causal_square: dict[torch.dtype, torch.Tensor] = {}


def causal_bias(rows: int, keys: int, dtype: torch.dtype) -> torch.Tensor:
    """[rows, keys] additive mask for the last ``rows`` queries over ``keys`` keys: 0 where a query
    may attend (its own position and before), -inf after."""
    square = _causal_square.get(dtype)
    if square is None or square.shape[0] < keys:
        size = max(keys, 2 * (0 if square is None else square.shape[0]), 256)
        square = torch.full((size, size), float("-inf"), dtype=dtype).triu(1)
        _causal_square[dtype] = square
    return square[keys - rows:keys, :keys]


def query_chunks(length: int) -> list[tuple[int, int]]:
    """[start, end) of each query chunk: about CHUNK_ROWS rows each, as even as they come."""
    count = max(1, round(length / CHUNK_ROWS))
    edges = [round(length * i / count) for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:]))


class ChunkedCausalAttention(torch.autograd.Function):
    """softmax(Q K^T / sqrt(d) + causal) V for bf16 [..., T, d] queries, keys and values."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        scale = q.shape[-1] ** -0.5
        chunks = query_chunks(q.shape[-2])
        outputs, probabilities = [], []
        for start, end in chunks:
            scores = torch.matmul(q[..., start:end, :], k[..., :end, :].transpose(-1, -2))
            scores.mul_(scale).add_(causal_bias(end - start, end, scores.dtype))
            p = torch.softmax(scores, -1, dtype=torch.float32).to(q.dtype)
            outputs.append(torch.matmul(p, v[..., :end, :]))
            probabilities.append(p)
        y = outputs[0] if len(outputs) == 1 else torch.cat(outputs, -2)
        ctx.save_for_backward(q, k, v, y, *probabilities)
        ctx.chunks = chunks
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        q, k, v, y, *probabilities = ctx.saved_tensors
        scale = q.shape[-1] ** -0.5
        dy = dy.to(q.dtype)
        row_dot = (dy.float() * y.float()).sum(-1, keepdim=True)  # rowsum(dY * Y) = rowsum(P * dP)
        single = len(ctx.chunks) == 1
        dq = torch.empty_like(q)
        # Chunks share keys: their gradients are summed in fp32, rounded to bf16 once.
        dk = None if single else torch.zeros(k.shape, dtype=torch.float32)
        dv = None if single else torch.zeros(v.shape, dtype=torch.float32)
        for (start, end), p in zip(ctx.chunks, probabilities):
            grad = dy[..., start:end, :]
            value_grad = torch.matmul(p.transpose(-1, -2), grad)
            dp = torch.matmul(grad, v[..., :end, :].transpose(-1, -2))
            ds = dp.float().sub_(row_dot[..., start:end, :]).mul_(p).mul_(scale).to(q.dtype)
            dq[..., start:end, :] = torch.matmul(ds, k[..., :end, :])
            key_grad = torch.matmul(ds.transpose(-1, -2), q[..., start:end, :])
            if single:
                dk, dv = key_grad, value_grad
            else:
                dk[..., :end, :] += key_grad
                dv[..., :end, :] += value_grad
        return dq, dk.to(k.dtype), dv.to(v.dtype)


def causal_attention_bf16(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of bf16 [..., T, d] queries, keys and values (ChunkedCausalAttention)."""
    return ChunkedCausalAttention.apply(q, k, v)

"""The chunked bf16 CPU attention: fp32's results at bf16's rounding, strictly causal, and the
kernel the packed CPU path takes under bf16 (and only then)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from datamodules.cfg import pack
from oe.cfg import sample
from oe.models import cpu_attention
from oe.models.attention import DocumentMask
from oe.models.cpu_attention import CHUNK_ROWS, causal_attention_bf16, query_chunks

# bf16 keeps 8 significant bits; scores, probabilities and products are each rounded once.
# Measured on these inputs: errors up to about 1% of the largest fp32 value.
SHARE_OF_LARGEST = 0.03


def _close(half: torch.Tensor, full: torch.Tensor, largest: float | None = None) -> None:
    """Within SHARE_OF_LARGEST of ``largest`` (default: full's largest magnitude)."""
    largest = float(full.detach().abs().max()) if largest is None else largest
    error = float((half.detach().float() - full.detach()).abs().max())
    assert error <= SHARE_OF_LARGEST * largest, (error, largest)


@pytest.mark.parametrize("length", [1, 5, CHUNK_ROWS, CHUNK_ROWS + 1, 300, 451])
def test_outputs_and_gradients_are_fp32s_at_bf16_rounding(length):
    torch.manual_seed(length)
    q, k, v = (torch.randn(3, 2, length, 16, requires_grad=True) for _ in range(3))
    grad = torch.randn(3, 2, length, 16)
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    full.backward(grad)
    full_grads = [t.grad for t in (q, k, v)]
    halves = [t.detach().bfloat16().requires_grad_(True) for t in (q, k, v)]
    half = causal_attention_bf16(*halves)
    half.backward(grad.bfloat16())
    assert half.dtype == torch.bfloat16
    _close(half, full)
    # A one-key softmax has no gradient for its query and key: fp32 leaves rounding noise there,
    # so every gradient is held to the largest of the three.
    largest = max(float(g.abs().max()) for g in full_grads)
    for t, full_grad in zip(halves, full_grads):
        assert t.grad.dtype == torch.bfloat16
        _close(t.grad, full_grad, largest)


def test_no_query_sees_a_later_key():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 300, 16).bfloat16() for _ in range(3))
    before = causal_attention_bf16(q, k, v)
    k2, v2 = k.clone(), v.clone()
    k2[..., 200:, :], v2[..., 200:, :] = 7.0, -7.0
    after = causal_attention_bf16(q, k2, v2)
    assert torch.equal(after[..., :200, :], before[..., :200, :])
    assert not torch.equal(after[..., 200:, :], before[..., 200:, :])


@pytest.mark.parametrize("length", [1, 2, 127, 128, 129, 300, 1000])
def test_query_chunks_cover_the_rows_once(length):
    chunks = query_chunks(length)
    assert chunks[0][0] == 0 and chunks[-1][1] == length
    assert all(end == start for (_, end), (start, _) in zip(chunks, chunks[1:]))
    assert all(end > start for start, end in chunks)
    assert max(end - start for start, end in chunks) < 2 * CHUNK_ROWS


def _packed_qkv(dtype: torch.dtype):
    symbols, lengths = sample(5, torch.arange(6).numpy())
    _, doc_ids = pack(symbols, lengths, row_tokens=900)
    torch.manual_seed(0)
    qkv = torch.randn(*doc_ids.shape, 3, 2, 16).to(dtype)
    return doc_ids, qkv


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_the_packed_cpu_path_takes_the_kernel_for_bf16_without_dropout_only(monkeypatch, dropout):
    calls = []
    kernel = cpu_attention.causal_attention_bf16

    def counted(*args):
        calls.append(args[0].dtype)
        return kernel(*args)

    monkeypatch.setattr("oe.models.attention.causal_attention_bf16", counted)
    doc_ids, qkv = _packed_qkv(torch.bfloat16)
    documents = DocumentMask(doc_ids, "unpacked")
    torch.manual_seed(0)
    documents.attend(qkv.float(), dropout)
    assert calls == []  # fp32 input: PyTorch's fp32 kernel
    documents.attend(qkv, dropout)
    assert calls == ([] if dropout else [torch.bfloat16] * len(documents.groups))


def test_the_packed_cpu_path_in_bf16_matches_the_dense_fp32_reference():
    doc_ids, qkv = _packed_qkv(torch.float32)
    qkv.requires_grad_(True)
    reference = DocumentMask(doc_ids, "dense").attend(qkv)
    grad = torch.randn_like(reference)
    (qkv_grad,) = torch.autograd.grad(reference, qkv, grad)
    half = qkv.detach().bfloat16().requires_grad_(True)
    out = DocumentMask(doc_ids, "unpacked").attend(half)
    (half_grad,) = torch.autograd.grad(out, half, grad.bfloat16())
    assert out.dtype == torch.bfloat16
    _close(out, reference)
    _close(half_grad, qkv_grad)


@pytest.mark.parametrize("rows, keys", [(1, 1), (3, 3), (2, 5), (128, 300), (100, 2000)])
def test_the_causal_bias_masks_keys_after_each_query(rows, keys):
    bias = cpu_attention.causal_bias(rows, keys, torch.float32)
    query = torch.arange(keys - rows, keys)[:, None]  # each row's position among the keys
    allowed = torch.arange(keys)[None, :] <= query
    assert bias.shape == (rows, keys)
    assert torch.equal(bias == 0, allowed) and torch.isinf(bias[~allowed]).all()

"""GPT on packed rows: attention inside documents equals one row per document, on every path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.cfg import collate, pack
from oe.cfg import sample
from oe.models.attention import DocumentMask, positions_in_documents
from oe.models.embedding import TokenEmbedding
from oe.models.gpt import GPT, BackboneConfig


def _model(compile: bool | None = False) -> GPT:
    torch.manual_seed(0)
    config = BackboneConfig(n_layer=2, n_head=2, n_embd=16, block_size=1024, compile=compile)
    return GPT(config, TokenEmbedding(6, 16), 6)


def _sentences(n: int = 7, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    return sample(seed, np.arange(n))


def test_positions_restart_at_each_document():
    doc_ids = torch.tensor([[0, 0, 0, 1, 1, 9, 9, 9]])
    assert positions_in_documents(doc_ids).tolist() == [[0, 1, 2, 0, 1, 0, 1, 2]]


@pytest.mark.parametrize("path", ["unpacked", "dense", "flex"])
def test_packed_hidden_states_equal_one_row_per_sentence(path):
    model = _model()
    model.document_attention = path
    symbols, lengths = _sentences()
    padded = collate(symbols, lengths)
    tokens, doc_ids = pack(symbols, lengths, row_tokens=731)
    assert tokens.shape[0] < len(lengths)  # several sentences share a row
    with torch.no_grad():
        packed_out = model(tokens, doc_ids, isolate_documents=True)
        padded_out = model(padded)
    for i, n in enumerate(lengths.tolist()):
        where = (doc_ids == i).nonzero()
        row, cols = int(where[0, 0]), where[:, 1]
        torch.testing.assert_close(packed_out[row, cols], padded_out[i, : n + 2],
                                   rtol=1e-4, atol=1e-5)


def test_pad_positions_attend_only_to_pad():
    doc_ids = torch.tensor([[0, 0, 0, 5, 5]])
    mask = DocumentMask(doc_ids, "dense").mask[0, 0]
    assert not mask[3:, :3].any() and not mask[:3, 3:].any()


def test_compiled_blocks_give_the_eager_loss():
    symbols, lengths = _sentences(4)
    tokens = collate(symbols, lengths)
    eager = _model(compile=False)(tokens)
    compiled = _model(compile=True)(tokens)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


def test_cached_generation_step_equals_the_full_pass():
    model = _model()
    tokens = torch.tensor([[4, 1, 2, 3, 3, 1], [4, 3, 3, 1, 2, 2]])
    full = model(tokens)[:, -1]
    cache = model.new_cache(2, 8, tokens.device)
    for t in range(tokens.shape[1]):
        last = model.step(tokens[:, t : t + 1], cache)
    torch.testing.assert_close(last, full, rtol=1e-4, atol=1e-5)

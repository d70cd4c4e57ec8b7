"""Compiled blocks take the packed shapes of real batches in a bounded number of compilations."""

from __future__ import annotations

import logging

import pytest
import torch

from datamodules.cfg import CFGStream
from oe.models import compile as compile_module
from oe.models.attention import DocumentMask
from oe.models.embedding import TokenEmbedding
from oe.models.gpt import GPT, BackboneConfig

VOCAB = 7


@pytest.fixture(autouse=True)
def fresh_dynamo():
    # Dynamo counts compilations per code object over the whole process: code compiled by an
    # earlier test would count here too.
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _micro_batch_shapes(sentences: int, budget: int, batches: int) -> list[tuple[int, int]]:
    """Distinct [rows, width] inputs of batches of ``sentences`` packed into micro-batches of
    ``budget`` tokens, in the order a run meets them."""
    stream = CFGStream(seed=0, batch_size=sentences, batches_per_epoch=batches, epochs=1,
                       packed=True, micro_batch_tokens=budget)
    shapes: list[tuple[int, int]] = []
    for batch in stream:
        ids, rows = batch["input_ids"][:, :-1], batch["micro_batch_rows"]
        for start in range(0, ids.shape[0], rows):
            shape = tuple(ids[start:start + rows].shape)
            if shape not in shapes:
                shapes.append(shape)
    return shapes


def _flex_gpt() -> GPT:
    torch.manual_seed(0)
    config = BackboneConfig(n_layer=2, n_head=2, n_embd=16, block_size=1024, compile=True)
    gpt = GPT(config, TokenEmbedding(VOCAB, 16), VOCAB).eval()
    gpt.document_attention = "flex"  # the CUDA path; its forward also runs on a CPU
    return gpt


def _documents(rows: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    doc_ids = torch.arange(rows * width).reshape(rows, width) // 300
    return torch.randint(1, VOCAB, (rows, width)), doc_ids


def test_paper_batch_shapes_compile_within_the_bound(monkeypatch):
    # The paper's batch (512 sentences, micro-batches of 16,384 tokens), scaled down 4 times so
    # that the CPU's reference attention fits: widths change from batch to batch in steps of 128
    # (less the shifted target), one row per micro-batch, as in the paper's.
    monkeypatch.setattr(compile_module, "COMPILE_BACKEND", "eager")
    shapes = _micro_batch_shapes(sentences=128, budget=4096, batches=6)
    assert len(shapes) >= 3, shapes  # several shapes, else the test shows nothing
    gpt = _flex_gpt()
    with torch.no_grad():
        for rows, width in shapes:
            tokens, doc_ids = _documents(rows, width)
            gpt(tokens, doc_ids, isolate_documents=True)
    compilations = gpt.__dict__["compiled_blocks"].compilations
    assert 1 <= compilations <= compile_module.COMPILE_BOUND, (compilations, shapes)


def test_compilations_past_the_bound_are_named(monkeypatch, caplog):
    monkeypatch.setattr(compile_module, "COMPILE_BACKEND", "eager")
    monkeypatch.setattr(compile_module, "COMPILE_BOUND", 1)
    gpt = _flex_gpt()
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger=compile_module.__name__):
        for rows, width in [(2, 255), (1, 255), (3, 127)]:  # 1 row: dynamo specialises it
            gpt(*_documents(rows, width), isolate_documents=True)
    assert gpt.__dict__["compiled_blocks"].compilations > 1
    warnings = [r.getMessage() for r in caplog.records if "compiled" in r.getMessage()]
    assert len(warnings) == 1 and "the transformer blocks compiled 2 times" in warnings[0]
    assert "data.row_tokens" in warnings[0]


def test_grouped_cpu_attention_compiles_once_for_batches_of_other_groups(monkeypatch):
    # The CPU path groups each batch's sentences by length (a Python list that differs from batch
    # to batch); compiled blocks leave it untraced, so new groups never mean a new graph.
    monkeypatch.setattr(compile_module, "COMPILE_BACKEND", "eager")
    torch.manual_seed(0)
    config = BackboneConfig(n_layer=2, n_head=2, n_embd=16, block_size=1024, compile=True)
    compiled = GPT(config, TokenEmbedding(VOCAB, 16), VOCAB).eval()
    compiled.document_attention = "unpacked"
    eager = GPT(BackboneConfig(**{**vars(config), "compile": False}),
                TokenEmbedding(VOCAB, 16), VOCAB).eval()
    eager.load_state_dict(compiled.state_dict())
    eager.document_attention = "unpacked"
    stream = CFGStream(seed=0, batch_size=24, batches_per_epoch=5, epochs=1, packed=True,
                       micro_batch_tokens=4096)
    groups = set()
    with torch.no_grad():
        for batch in stream:
            tokens, doc_ids = batch["input_ids"] % VOCAB, batch["doc_ids"]
            torch.testing.assert_close(compiled(tokens, doc_ids, isolate_documents=True),
                                       eager(tokens, doc_ids, isolate_documents=True))
            groups.add(tuple(DocumentMask(doc_ids, "unpacked").groups))
    assert len(groups) == 5  # every batch grouped its own way
    blocks = compiled.__dict__["compiled_blocks"]
    assert 1 <= blocks.recompilations <= compile_module.COMPILE_BOUND, blocks.recompilations

"""The OverEncoding embedding: the formula on a hand-worked case, sparsity, configuration errors."""

from __future__ import annotations

import logging

import pytest
import torch

from oe.models.embedding import OverEncoding, OverEncodingConfig, TokenEmbedding, plan_tables
from oe.training.lm import LanguageModel
from oe.models.gpt import BackboneConfig
from tests.conftest import assert_steps_equal_forward


def _tables(embedding: OverEncoding) -> dict[str, torch.Tensor]:
    return {t.name: w for t, w in zip(embedding.tables, embedding.table_parameters())}


def test_hand_computed_two_slice_example():
    # V = 3, D = 4, one n-gram order (2) in k = 2 slices of width 2, moduli 5 and 7.
    config = OverEncodingConfig(orders=[2], k=2, modulus=5, project=True)
    emb = OverEncoding(vocab_size=3, dim=4, config=config)
    assert [(t.modulus, t.width) for t in emb.tables] == [(5, 2), (7, 2)]
    with torch.no_grad():
        emb.token.weight.copy_(torch.tensor([[0.0] * 4, [1.0, 0, 0, 0], [0, 2.0, 0, 0]]))
        t0, t1 = _tables(emb).values()
        t0.copy_(torch.arange(10.0).reshape(5, 2))        # row r = (2r, 2r+1)
        t1.copy_(-torch.arange(14.0).reshape(7, 2))       # row r = (-2r, -2r-1)
        emb.projection.weight.copy_(torch.eye(4) * 2)     # P doubles every coordinate
    out = emb(torch.tensor([[1, 2]]))
    # Position 0: 2-gram (pad=0, 1) -> id 1 + 0*3 = 1 in both slices.
    #   E1 = (1,0,0,0); slices (2,3) and (-2,-3); P -> (4,6,-4,-6); mean of 3 terms.
    # Position 1: 2-gram (1, 2) -> id 2 + 1*3 = 5: slice 0 row 5 mod 5 = 0 -> (0, 1),
    #   slice 1 row 5 mod 7 = 5 -> (-10, -11); E1 = (0,2,0,0); P -> (0, 2, -20, -22).
    expected = torch.tensor([[[1 + 4, 6, -4, -6], [0, 2 + 2, -20, -22]]]) / 3
    torch.testing.assert_close(out, expected)


def test_without_projection_each_slice_keeps_its_block():
    config = OverEncodingConfig(orders=[2, 3], k=1, modulus=101, project=False, combine="sum")
    emb = OverEncoding(vocab_size=3, dim=4, config=config)
    tokens = torch.tensor([[2, 1, 1]])
    out = emb(tokens)
    t2, t3 = _tables(emb).values()
    # 3-gram at position 2: 1 + 1*3 + 2*9 = 22; 2-gram: 1 + 1*3 = 4.
    expected = emb.token.weight[1] + torch.cat([t2[4], t3[22]])
    torch.testing.assert_close(out[0, 2], expected)


def test_gradients_reach_only_the_rows_used():
    config = OverEncodingConfig(orders=[2, 3], k=2, modulus=1001)
    emb = OverEncoding(vocab_size=6, dim=8, config=config)
    tokens = torch.tensor([[4, 1, 2, 3, 1], [4, 3, 3, 0, 0]])
    emb(tokens).pow(2).sum().backward()
    from oe.models.ngram import ngram_ids

    for table, weight in zip(emb.tables, emb.table_parameters()):
        used = set(ngram_ids(tokens, table.order, 6, table.modulus).flatten().tolist())
        touched = set(torch.nonzero(weight.grad.abs().sum(1)).flatten().tolist())
        assert touched == used, table.name


def test_incremental_step_equals_full_forward():
    config = OverEncodingConfig(orders=[2, 3], k=2, modulus=1001)
    emb = OverEncoding(vocab_size=6, dim=8, config=config)
    tokens = torch.tensor([[4, 1, 2, 3, 1, 2], [4, 3, 3, 2, 1, 1]])
    full = emb(tokens)
    padded = torch.cat([torch.zeros(2, emb.context_size, dtype=torch.long), tokens], dim=1)
    for t in range(tokens.shape[1]):
        recent = padded[:, t : t + emb.context_size + 1]
        torch.testing.assert_close(emb.forward_last(recent)[:, 0], full[:, t])


def test_model_generation_matches_full_forward_logits():
    model = LanguageModel(backbone=BackboneConfig(n_layer=2, n_head=2, n_embd=16, block_size=64),
                          over_encoding=OverEncodingConfig(orders=[2, 3], modulus=1001)).model
    model.eval()
    assert_steps_equal_forward(model, torch.tensor([[4, 1, 2, 3, 1, 2, 2]]))


def test_exact_tables_are_logged(caplog):
    with caplog.at_level(logging.INFO, logger="oe.models.embedding"):
        OverEncoding(6, 8, OverEncodingConfig(orders=[2, 3], modulus=101))
    assert "ngram2_0" in caplog.text and "exact" in caplog.text  # 36 <= 101
    assert "hashed" in caplog.text  # 216 > 103


@pytest.mark.parametrize("config", [
    OverEncodingConfig(orders=[2], modulus=600),  # a multiple of V = 6
    OverEncodingConfig(orders=[2, 3], k=1, modulus=598),  # 598 + 2 = 600
])
def test_a_modulus_that_is_a_multiple_of_the_vocabulary_names_the_field(config):
    # The one check that needs the vocabulary (the others: tests/models/test_config.py).
    with pytest.raises(ValueError, match="model.over_encoding.modulus: table"):
        plan_tables(config, vocab_size=6, dim=128)


def test_a_modulus_that_is_a_multiple_of_the_vocabulary_names_each_table_modulus():
    # configs/wikitext_oe3.yaml (m = 12.8M) with the quick preset's BPE of 4,096 ids
    with pytest.raises(ValueError, match=r"would use modulus 12800000, a multiple of the "
                       r"vocabulary size 4096; pick m so that none of m, m\+2 is a multiple"):
        plan_tables(OverEncodingConfig(orders=[2, 3], modulus=12_800_000), 4096, 128)
    with pytest.raises(ValueError, match=r"none of m, m\+2, \.\.\., m\+14 is"):
        plan_tables(OverEncodingConfig(orders=[2, 3], k=4, modulus=4096), 4096, 128)


def test_moduli_are_distinct_across_the_model():
    tables = plan_tables(OverEncodingConfig(orders=[2, 3], k=4, modulus=12_800_001), 50257, 768)
    assert len({t.modulus for t in tables}) == 8
    assert all(t.width == 96 for t in tables)


def test_baseline_and_oe_share_everything_but_the_embedding():
    backbone = BackboneConfig(n_layer=2, n_head=2, n_embd=16, block_size=64)
    base = LanguageModel(backbone=backbone)
    over_encoded = LanguageModel(backbone=backbone, over_encoding=OverEncodingConfig(modulus=1001))
    assert isinstance(base.model.embedding, TokenEmbedding)
    assert type(base) is type(over_encoded)
    base_names = {n for n, _ in base.named_parameters() if ".embedding." not in n}
    oe_names = {n for n, _ in over_encoded.named_parameters() if ".embedding." not in n}
    assert base_names == oe_names

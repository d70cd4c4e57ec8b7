"""Over-Encoding's memory options: hash families, the gate, injection layers, per-layer tables.

The defaults are the paper's model exactly; each option is checked against a hand-written pass.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from oe.distributed.checkpoint import TABLE_KEY
from oe.distributed.table_state import check_tables, table_signature
from oe.distributed.parallelize import TableSharding, shard_embedding
from oe.models.build import build_model
from oe.models.embedding import OverEncoding, OverEncodingConfig
from oe.models.gpt import BackboneConfig
from oe.models.ngram import ngram_ids
from tests.conftest import assert_steps_equal_forward

VOCAB = 11
BACKBONE = BackboneConfig(n_layer=2, n_head=2, n_embd=16, block_size=32)
TOKENS = torch.tensor([[4, 1, 2, 3, 1, 2, 3, 5], [4, 2, 2, 7, 2, 9, 2, 5]])
DOCS = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1], [0] * 8])


def _gpt(seed: int = 0, **fields):
    torch.manual_seed(seed)
    config = OverEncodingConfig(**{"orders": [2, 3], "k": 2, "modulus": 101, **fields})
    return build_model(VOCAB, backbone=BACKBONE, over_encoding=config).gpt.eval()


def _rows(embedding: OverEncoding, tables, ids) -> torch.Tensor:
    return torch.cat([embedding.ngram.embeddings[t.name].weight[i] for t, i in zip(tables, ids)], -1)


def _paper_embedding(embedding: OverEncoding, tokens, docs=None) -> torch.Tensor:
    """The paper's OE(x), from the polynomial ids and the module's weights, by hand."""
    ids = [ngram_ids(tokens, t.order, VOCAB, t.modulus, 0, docs) for t in embedding.tables]
    slices = _rows(embedding, embedding.tables, ids)
    return (embedding.token(tokens) + embedding.projection(slices)) * (1.0 / (1 + len(embedding.tables)))


def test_the_defaults_are_the_papers_model_exactly():
    default, explicit = _gpt(), _gpt(hash="polynomial", gate=False, layers=[0], heads=2, k=1)
    assert default.state_dict().keys() == explicit.state_dict().keys()
    for name, value in default.state_dict().items():
        assert torch.equal(value, explicit.state_dict()[name]), name
    names = {n for n, _ in default.embedding.named_parameters()}
    assert names == {"token.weight", "projection.weight",
                     *(f"ngram.embeddings.{t.name}.weight" for t in default.embedding.tables)}
    assert [t.modulus for t in default.embedding.tables] == [101, 103, 105, 107]
    with torch.no_grad():
        embedded = default.embedding(TOKENS, DOCS)
        torch.testing.assert_close(embedded, _paper_embedding(default.embedding, TOKENS, DOCS),
                                   rtol=0, atol=0)
        hand = default.logits(default.ln_f(_blocks(default, embedded + default.position.weight[:8])))
        torch.testing.assert_close(default(TOKENS, DOCS), hand, rtol=0, atol=0)


def _blocks(gpt, x, memory=None):
    for layer, block in enumerate(gpt.blocks):
        if memory is not None and layer in memory:
            x = x + memory[layer]
        x = block(x)
    return x


def test_an_inner_layer_adds_the_memory_before_its_block():
    gpt = _gpt(layers=[1])
    emb = gpt.embedding
    with torch.no_grad():
        ids = [ngram_ids(TOKENS, t.order, VOCAB, t.modulus) for t in emb.tables]
        memory = emb.projection(_rows(emb, emb.tables, ids)) / (1 + len(emb.tables))
        x = emb.token(TOKENS) + gpt.position.weight[:8]  # the input is the plain token embedding
        hand = gpt.logits(gpt.ln_f(_blocks(gpt, x, {1: memory})))
        torch.testing.assert_close(gpt(TOKENS), hand)


def test_the_gate_scales_each_slice_by_the_hidden_states_agreement():
    gpt = _gpt(gate=True)
    emb = gpt.embedding
    with torch.no_grad():
        ids = [ngram_ids(TOKENS, t.order, VOCAB, t.modulus) for t in emb.tables]
        token = emb.token(TOKENS)
        query = token / token.pow(2).mean(-1, keepdim=True).add(torch.finfo(token.dtype).eps).sqrt()
        gated = []
        for t, key, i in zip(emb.tables, emb.gates["0"].keys, ids):
            row = emb.ngram.embeddings[t.name].weight[i]
            k = key(row)
            k = k / k.pow(2).mean(-1, keepdim=True).add(torch.finfo(k.dtype).eps).sqrt()
            gated.append(row * torch.sigmoid((query * k).sum(-1, keepdim=True) / math.sqrt(16)))
        hand = (token + emb.projection(torch.cat(gated, -1))) / (1 + len(emb.tables))
        torch.testing.assert_close(emb(TOKENS), hand)
    ungated = _gpt()
    assert not torch.allclose(gpt(TOKENS), ungated(TOKENS))
    gpt.train()
    gpt(TOKENS).sum().backward()
    assert all(k.weight.grad.abs().sum() > 0 for k in emb.gates["0"].keys)


@pytest.mark.parametrize("fields", [
    dict(hash="multiply_xor"),
    dict(hash="multiply_xor", gate=True, layers=[0, 1], per_layer_tables=True),
    dict(gate=True, layers=[1]),
    dict(layers=[1, 0], project=False),
])
def test_generation_steps_equal_the_full_forward(fields):
    assert_steps_equal_forward(_gpt(**fields), TOKENS)


def test_per_layer_tables_are_separate_and_equal_in_size_to_one_set_per_layer():
    shared, separate = _gpt(layers=[0, 1]), _gpt(layers=[0, 1], per_layer_tables=True)
    assert [t.name for t in shared.embedding.tables] == ["ngram2_0", "ngram2_1", "ngram3_0", "ngram3_1"]
    assert [t.name for t in separate.embedding.tables][4:] == [
        "layer1_ngram2_0", "layer1_ngram2_1", "layer1_ngram3_0", "layer1_ngram3_1"]
    assert len({t.modulus for t in separate.embedding.tables}) == 8
    inner_only = _gpt(layers=[1])  # the same tables as the input model: an equal-size ablation
    assert [t.name for t in inner_only.embedding.tables] == [t.name for t in shared.embedding.tables]


def test_multiply_xor_tables_have_prime_moduli_and_own_multipliers():
    tables = _gpt(hash="multiply_xor").embedding.tables
    assert [t.modulus for t in tables] == [101, 103, 107, 109]
    assert len({t.hash.multipliers for t in tables}) == 4


@pytest.mark.parametrize("fields,field", [
    (dict(hash="crc"), "over_encoding.hash"),
    (dict(heads=0), "over_encoding.heads"),
    (dict(heads=2, k=4), "over_encoding.heads"),
    (dict(layers=[2]), "over_encoding.layers"),
    (dict(layers=[-1]), "over_encoding.layers"),
    (dict(layers=[]), "over_encoding.layers"),
    (dict(gate=True, orders=[]), "over_encoding.gate"),
])
def test_bad_options_are_one_error_naming_the_field_before_anything_is_built(fields, field):
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    config = OverEncodingConfig(**{"orders": [2, 3], "modulus": 101, **fields})
    with pytest.raises(ValueError, match=field):
        build_model(VOCAB, backbone=BACKBONE, over_encoding=config)
    assert torch.equal(torch.random.get_rng_state(), state)  # nothing drew an initial value


def test_a_checkpoint_of_another_hash_family_is_refused_naming_both(tmp_path):
    written = _gpt(hash="multiply_xor")
    checkpoint = {TABLE_KEY: table_signature(written), "state_dict": {}}
    with pytest.raises(ValueError, match="hash: checkpoint 'multiply_xor', model 'polynomial'"):
        check_tables(checkpoint, _gpt(), tmp_path / "x.ckpt")
    older = table_signature(_gpt())
    del older["embedding.ngram"]["hash"]  # written before hash families: polynomial
    with pytest.raises(ValueError, match="hash: checkpoint 'polynomial', model 'multiply_xor'"):
        check_tables({TABLE_KEY: older, "state_dict": {}}, written, tmp_path / "x.ckpt")


def test_per_layer_multiply_xor_tables_shard_like_the_paper_tables():
    gpt = _gpt(hash="multiply_xor", gate=True, layers=[0, 1], per_layer_tables=True)
    with torch.no_grad():
        before = gpt(TOKENS)
    sharding = TableSharding(optimizer="sgd", lr=0.1, weight_decay=0.0,
                             seed=gpt.embedding.table_seed, init_std=0.02)
    shard_embedding(gpt.embedding, sharding, torch.device("cpu"))
    with torch.no_grad():
        torch.testing.assert_close(gpt(TOKENS), before)

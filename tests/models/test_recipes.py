"""Over-Encoding recipe switches beyond the paper: fusion, output scale, sign trick, table init.

Each switch is checked against values worked by hand on a tiny input; the defaults stay the
paper's model (tests/models/test_memory_options.py checks that one exactly).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from oe.models.build import build_model
from oe.models.embedding import (OverEncoding, OverEncodingConfig, deferred_ngram_tables,
                                 plan_tables, table_size_warnings)
from oe.distributed.checkpoint import TABLE_KEY
from oe.distributed.table_state import check_tables, table_signature
from oe.distributed.parallelize import TableSharding, shard_embedding
from oe.models.gpt import BackboneConfig
from oe.models.ngram import KEY_MODULUS, SIGN_PRIME, ngram_ids, ngram_signs, sign_key
from tests.conftest import assert_steps_equal_forward

VOCAB = 11
BACKBONE = BackboneConfig(n_layer=2, n_head=2, n_embd=16, block_size=32)
TOKENS = torch.tensor([[4, 1, 2, 3, 1, 2, 3, 5], [4, 2, 2, 7, 2, 9, 2, 5]])


def _gpt(seed: int = 0, **fields):
    torch.manual_seed(seed)
    config = OverEncodingConfig(**{"orders": [2, 3], "k": 2, "modulus": 101, **fields})
    return build_model(VOCAB, backbone=BACKBONE, over_encoding=config).gpt.eval()


def _two_slice_embedding(**fields) -> OverEncoding:
    """V = 3, D = 4, order 2 in k = 2 slices of width 2 (moduli 5 and 7), P = 2 I; the weights
    of tests/models/test_embedding.py's hand-computed example."""
    config = OverEncodingConfig(**{"orders": [2], "k": 2, "modulus": 5, **fields})
    emb = OverEncoding(vocab_size=3, dim=4, config=config)
    with torch.no_grad():
        emb.token.weight.copy_(torch.tensor([[0.0] * 4, [1.0, 0, 0, 0], [0, 2.0, 0, 0]]))
        t0, t1 = (emb.ngram.embeddings[t.name].weight for t in emb.tables)
        t0.copy_(torch.arange(10.0).reshape(5, 2))        # row r = (2r, 2r+1)
        t1.copy_(-torch.arange(14.0).reshape(7, 2))       # row r = (-2r, -2r-1)
        emb.projection.weight.copy_(torch.eye(4) * 2)
    return emb


# In that example the memory (P times the two slices) is (4, 6, -4, -6) at position 0 and
# (0, 2, -20, -22) at position 1, the token embeddings (1, 0, 0, 0) and (0, 2, 0, 0).
MEMORY = torch.tensor([[4.0, 6, -4, -6], [0, 2, -20, -22]])
TOKEN = torch.tensor([[1.0, 0, 0, 0], [0, 2, 0, 0]])


@pytest.mark.parametrize("scale,factor", [("sqrt_d", 2.0), (0.5, 0.5), (3, 3.0)])
def test_ngram_scale_multiplies_the_memory_before_the_mean(scale, factor):
    emb = _two_slice_embedding(ngram_scale=scale)
    expected = (TOKEN + factor * MEMORY) / 3  # sqrt(D) = 2 at D = 4
    torch.testing.assert_close(emb(torch.tensor([[1, 2]]))[0], expected)


def test_rmsnorm_sum_normalises_each_part_and_divides_by_root_two():
    emb = _two_slice_embedding(combine="rmsnorm_sum")
    # RMS of (1,0,0,0) is 1/2, of (0,2,0,0) is 1; of (4,6,-4,-6) sqrt(26), of (0,2,-20,-22)
    # sqrt(222) (eps 1e-6 aside).
    token = torch.tensor([[2.0, 0, 0, 0], [0, 2, 0, 0]])
    memory = MEMORY / torch.tensor([[math.sqrt(26)], [math.sqrt(222)]])
    expected = (token + memory) / math.sqrt(2)
    torch.testing.assert_close(emb(torch.tensor([[1, 2]]))[0], expected, rtol=1e-5, atol=1e-5)
    # Each norm has its own gain, trained with the dense weights (no weight decay: 1-D).
    with torch.no_grad():
        emb.norms["memory"].weight.fill_(3.0)
    torch.testing.assert_close(emb(torch.tensor([[1, 2]]))[0], (token + 3 * memory) / math.sqrt(2),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fields", [
    dict(combine="rmsnorm_sum"),
    dict(ngram_scale="sqrt_d"),
    dict(ngram_scale=4.0, layers=[0, 1]),
])
def test_generation_steps_equal_the_full_forward(fields):
    assert_steps_equal_forward(_gpt(**fields), TOKENS)


def test_new_parts_come_after_the_papers_so_its_weights_are_unchanged():
    paper, fused = _gpt(), _gpt(combine="rmsnorm_sum")
    for name, value in paper.state_dict().items():
        assert torch.equal(value, fused.state_dict()[name]), name
    assert set(fused.state_dict()) - set(paper.state_dict()) == {
        "embedding.norms.token.weight", "embedding.norms.memory.weight"}


@pytest.mark.parametrize("fields,field", [
    (dict(combine="max"), "over_encoding.combine"),
    (dict(combine="rmsnorm_sum", layers=[0, 1]), "over_encoding.layers must be \\[0\\]"),
    (dict(ngram_scale="sqrt"), "over_encoding.ngram_scale"),
    (dict(ngram_scale=0.0), "over_encoding.ngram_scale"),
    (dict(ngram_scale=float("nan")), "over_encoding.ngram_scale"),
    (dict(combine="rmsnorm_sum", ngram_scale="sqrt_d"), "over_encoding.ngram_scale"),
])
def test_bad_recipe_options_are_one_error_naming_the_field(fields, field):
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    config = OverEncodingConfig(**{"orders": [2, 3], "modulus": 101, **fields})
    with pytest.raises(ValueError, match=field):
        build_model(VOCAB, backbone=BACKBONE, over_encoding=config)
    assert torch.equal(torch.random.get_rng_state(), state)  # nothing drew an initial value


# -- the sign trick ------------------------------------------------------------------------------

def test_signs_by_hand():
    # Table 0's key is (a, b, c) = (934944507, 1128743633, 1384748299), P = 2^31 - 1. V = 3:
    # 2-gram (pad, 1) has the exact id 1: (a + c) mod P = 172209159, odd: -1.
    # 2-gram (1, 2) has id 2 + 1*3 = 5: (5a + c) mod P = 1764503540, even: +1.
    assert sign_key(0) == (934944507, 1128743633, 1384748299)
    assert ngram_signs(torch.tensor([[1, 2]]), 2, 3, sign_key(0)).tolist() == [[-1, 1]]
    # Table 1 (a = 1010235877, c = 560721570): (a + c) mod P = 1570957447 and (5a + c) mod P =
    # 1316933661, both odd: -1, -1.
    assert ngram_signs(torch.tensor([[1, 2]]), 2, 3, sign_key(1)).tolist() == [[-1, -1]]


def test_signs_follow_the_formula_on_large_ids_and_are_balanced():
    vocab = 50_257
    tokens = torch.randint(0, vocab, (8, 64), generator=torch.Generator().manual_seed(0))
    key = sign_key(3)
    signs = ngram_signs(tokens, 3, vocab, key)
    exact = ngram_ids(tokens, 3, vocab, KEY_MODULUS)
    a, b, c = key
    by_hand = [[1 - 2 * ((a * (g % 2**20) + b * (g >> 20) + c) % SIGN_PRIME % 2) for g in row]
               for row in exact.tolist()]
    assert signs.tolist() == by_hand
    many = torch.randint(0, vocab, (64, 512), generator=torch.Generator().manual_seed(1))
    first, second = ngram_signs(many, 2, vocab, sign_key(0)), ngram_signs(many, 2, vocab, sign_key(1))
    assert abs(first.float().mean()) < 0.02 and abs((first * second).float().mean()) < 0.02


def test_signed_rows_by_hand():
    emb = _two_slice_embedding(signed=True)
    # Signs (tables 0, 1): position 0 (-1, -1), position 1 (+1, -1) (test_signs_by_hand).
    memory = MEMORY * torch.tensor([[-1.0, -1, -1, -1], [1, 1, -1, -1]])
    torch.testing.assert_close(emb(torch.tensor([[1, 2]]))[0], (TOKEN + memory) / 3)


@pytest.mark.parametrize("fields", [dict(signed=True), dict(signed=True, hash="multiply_xor",
                                                             layers=[0, 1], per_layer_tables=True)])
def test_signed_generation_steps_equal_the_full_forward(fields):
    assert_steps_equal_forward(_gpt(**fields), TOKENS)


@pytest.mark.parametrize("fields", [
    dict(signed=True),
    dict(signed=True, combine="rmsnorm_sum", table_init="token_mean"),
    dict(ngram_scale="sqrt_d", table_init="zero"),
])
def test_recipe_sharded_tables_equal_plain_tables(fields):
    gpt = _gpt(**fields)
    docs = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1], [0] * 8])
    with torch.no_grad():
        before = gpt(TOKENS, docs)
    sharding = TableSharding(optimizer="sgd", lr=0.1, weight_decay=0.0,
                             seed=gpt.embedding.table_seed, init_std=0.02)
    shard_embedding(gpt.embedding, sharding, torch.device("cpu"))
    with torch.no_grad():
        torch.testing.assert_close(gpt(TOKENS, docs), before)


def test_a_checkpoint_of_signed_tables_is_refused_by_unsigned_ones(tmp_path):
    written = {TABLE_KEY: table_signature(_gpt(signed=True)), "state_dict": {}}
    with pytest.raises(ValueError, match="signed: checkpoint True, model False"):
        check_tables(written, _gpt(), tmp_path / "x.ckpt")
    older = table_signature(_gpt())
    del older["embedding.ngram"]["signed"]  # written before the sign trick: unsigned
    with pytest.raises(ValueError, match="table folder"):  # the signature agrees; files next
        check_tables({TABLE_KEY: older, "state_dict": {}}, _gpt(), tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match="signed: checkpoint False, model True"):
        check_tables({TABLE_KEY: older, "state_dict": {}}, _gpt(signed=True), tmp_path / "x.ckpt")


# -- table init ----------------------------------------------------------------------------------

def _token_mean_embedding(**fields) -> OverEncoding:
    """V = 3, D = 4, order 2 in k = 2 slices of width 2 (moduli 5 and 7); E_1[x] = 4x + (1,2,3,4)."""
    config = OverEncodingConfig(**{"orders": [2], "k": 2, "modulus": 5, "table_init": "token_mean",
                                   **fields})
    emb = OverEncoding(vocab_size=3, dim=4, config=config)
    with torch.no_grad():
        emb.token.weight.copy_(torch.arange(1.0, 13.0).reshape(3, 4))
    emb.reset_ngram_tables()
    return emb


def test_token_mean_rows_by_hand():
    emb = _token_mean_embedding()
    t0, t1 = (emb.ngram.embeddings[t.name].weight for t in emb.tables)
    # Table 0 (columns 0-1), row 4 = 1 + 1*3: the 2-gram (1, 1), mean of (5, 6) and (5, 6).
    torch.testing.assert_close(t0[4], torch.tensor([5.0, 6.0]))
    # Row 2 = 2 + 0*3: the 2-gram (0, 2): ((1, 2) + (9, 10)) / 2 = (5, 6); row 3: (1, 0) ->
    # ((5, 6) + (1, 2)) / 2 = (3, 4).
    torch.testing.assert_close(t0[2], torch.tensor([5.0, 6.0]))
    torch.testing.assert_close(t0[3], torch.tensor([3.0, 4.0]))
    # Table 1 (columns 2-3), row 6 = 0 + 2*3: (2, 0): ((11, 12) + (3, 4)) / 2 = (7, 8).
    torch.testing.assert_close(t1[6], torch.tensor([7.0, 8.0]))


def test_token_mean_rows_past_every_ngram_are_zero():
    emb = _token_mean_embedding(k=1, modulus=11)  # V^2 = 9 <= 11: exact, rows 9 and 10 unused
    table = emb.ngram.embeddings["ngram2_0"].weight
    torch.testing.assert_close(table[8], torch.tensor([9.0, 10.0, 11.0, 12.0]))  # (2, 2)
    assert torch.equal(table[9:], torch.zeros(2, 4))


def test_zero_init_is_zero_and_the_model_starts_as_its_one_gram_part():
    gpt = _gpt(table_init="zero", project=False, combine="sum")
    assert all(torch.equal(w, torch.zeros_like(w)) for w in gpt.embedding.table_parameters())
    torch.testing.assert_close(gpt.embedding(TOKENS), gpt.embedding.token(TOKENS))


@pytest.mark.parametrize("init", ["zero", "token_mean", "normal"])
def test_sharded_tables_built_without_values_start_like_plain_ones(init):
    torch.manual_seed(0)
    plain = OverEncoding(VOCAB, 16, OverEncodingConfig(orders=[2, 3], k=2, modulus=101,
                                                       table_init=init))
    torch.manual_seed(0)
    with deferred_ngram_tables():
        deferred = OverEncoding(VOCAB, 16, OverEncodingConfig(orders=[2, 3], k=2, modulus=101,
                                                              table_init=init))
    sharding = TableSharding(optimizer="sgd", lr=0.1, weight_decay=0.0,
                             seed=deferred.table_seed, init_std=0.02)
    shard_embedding(deferred, sharding, torch.device("cpu"))
    with torch.no_grad():
        torch.testing.assert_close(deferred(TOKENS), plain(TOKENS), rtol=0, atol=0)


def test_token_mean_starts_from_the_pretrained_token_embedding(tmp_path):
    from tests.conftest import tiny_gpt2_dir

    directory = tiny_gpt2_dir(tmp_path)
    vocab = json.loads((directory / "config.json").read_text())["vocab_size"]
    config = OverEncodingConfig(orders=[2], k=2, modulus=1009, table_init="token_mean")
    gpt = build_model(vocab, pretrained=str(directory), over_encoding=config).gpt
    loaded = gpt.embedding.token.weight  # the pretrained rows, width 32: each table reads 16
    first, second = (gpt.embedding.ngram.embeddings[f"ngram2_{s}"].weight for s in (0, 1))
    row = 7 + 1 * vocab  # the 2-gram (1, 7); below 1009, so row r is the n-gram of id r
    torch.testing.assert_close(first[row], (loaded[1, :16] + loaded[7, :16]) / 2)
    torch.testing.assert_close(second[row], (loaded[1, 16:] + loaded[7, 16:]) / 2)


@pytest.mark.parametrize("fields,field", [
    (dict(table_init="uniform"), "over_encoding.table_init"),
    (dict(table_init="token_mean", hash="multiply_xor"), "over_encoding.table_init token_mean"),
])
def test_bad_table_init_is_one_error_naming_the_field(fields, field):
    with pytest.raises(ValueError, match=field):
        build_model(VOCAB, backbone=BACKBONE,
                    over_encoding=OverEncodingConfig(orders=[2, 3], modulus=101, **fields))


# -- table-size hygiene --------------------------------------------------------------------------

def test_sizes_within_one_percent_of_v_of_a_multiple_are_named():
    vocab = 50_257  # 1% of V: 502.57 rows
    def warned(modulus: int) -> list[str]:
        return table_size_warnings(plan_tables(OverEncodingConfig(orders=[2], modulus=modulus),
                                               vocab, 64), vocab)
    assert warned(100 * vocab + 3) == [
        "n-gram table ngram2_0 (order 2): 5,025,703 rows = 100 x 50,257 + 3, within 1% of the "
        "vocabulary size of a multiple of it; choose over_encoding.modulus away from multiples "
        "of V (e.g. 5,050,829)"]
    assert "= 100 x 50,257 - 502," in warned(100 * vocab - 502)[0]
    assert warned(100 * vocab + 503) == [] and warned(100 * vocab - 503) == []
    assert warned(12_800_001) == []  # the paper's m: 254 x V + 34,723
    assert warned(vocab // 2 + 1) == []  # below V: no multiple near


def test_building_a_table_near_a_multiple_logs_a_warning(caplog):
    with caplog.at_level("WARNING", logger="oe.models.embedding"):
        OverEncoding(1000, 8, OverEncodingConfig(orders=[2, 3], modulus=3001))
    assert [r.getMessage().split(",")[0] for r in caplog.records] == [
        "n-gram table ngram2_0 (order 2): 3", "n-gram table ngram3_0 (order 3): 3"]
    assert "3,003 rows = 3 x 1,000 + 3" in caplog.records[1].getMessage()

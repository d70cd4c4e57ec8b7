"""oe.models.decoding: cached decoding equals full passes; tables in host memory decode alike."""

from __future__ import annotations

import copy

import pytest
import torch

from oe.models.build import build_model
from oe.models.decoding import Sampling, decode, sample_from_bos, sample_next
from oe.models.embedding import HostTables, OverEncodingConfig
from oe.models.gpt import BackboneConfig, KVCache

VOCAB = 13
BACKBONE = BackboneConfig(n_layer=2, n_head=2, n_embd=16, block_size=48)
PROMPTS = torch.tensor([[4, 1, 2, 3, 1], [4, 2, 2, 7, 9], [3, 3, 3, 3, 3]])


def _gpt(over_encoding: OverEncodingConfig | None):
    torch.manual_seed(0)
    return build_model(VOCAB, backbone=BACKBONE, over_encoding=over_encoding).gpt.eval()


CONFIGS = [None, OverEncodingConfig(orders=[2, 3], modulus=101),
           OverEncodingConfig(orders=[2, 3], modulus=101, hash="multiply_xor", gate=True,
                              layers=[0, 1], per_layer_tables=True),
           OverEncodingConfig(orders=[2, 3], modulus=101, signed=True, combine="rmsnorm_sum")]


@pytest.mark.parametrize("config", CONFIGS)
def test_greedy_decoding_equals_full_passes(config):
    gpt = _gpt(config)
    got = decode(gpt, PROMPTS, 12, Sampling(temperature=0))
    tokens = PROMPTS
    with torch.no_grad():
        for _ in range(12):
            tokens = torch.cat([tokens, gpt(tokens)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(got, tokens[:, PROMPTS.shape[1]:])


@pytest.mark.parametrize("config", CONFIGS[1:])
def test_host_memory_decoding_equals_device_decoding_token_for_token(config):
    on_device = _gpt(config)
    on_host = copy.deepcopy(on_device)
    host_tables = HostTables(on_host.embedding, "cpu")
    assert on_host.embedding.ngram is None  # only the host path can serve the rows now
    sampling = Sampling(temperature=1.0, top_k=8, top_p=0.95)
    expected = decode(on_device, PROMPTS, 20, sampling, torch.Generator().manual_seed(7))
    got = decode(on_host, PROMPTS, 20, sampling, torch.Generator().manual_seed(7),
                 host_tables=host_tables)
    assert torch.equal(got, expected)
    with pytest.raises(RuntimeError, match="host memory"):
        on_host(PROMPTS)


def test_decoding_stops_when_every_row_has_ended():
    gpt = _gpt(CONFIGS[1])
    first = decode(gpt, PROMPTS, 6, Sampling(temperature=0))
    eos = int(first[0, 0])
    stopped = decode(gpt, PROMPTS[:1], 6, Sampling(temperature=0), eos_id=eos)
    assert stopped.tolist() == [[eos]]


def test_truncated_sampling_keeps_only_the_allowed_tokens():
    logits = torch.tensor([[0.0, 3.0, 2.0, 1.0]])
    assert sample_next(logits, Sampling(top_k=1)).item() == 1
    assert sample_next(logits, Sampling(top_p=0.5)).item() == 1  # the top token holds 0.64
    draws = {sample_next(logits, Sampling(top_k=2), torch.Generator().manual_seed(s)).item()
             for s in range(40)}
    assert draws == {1, 2}


@pytest.mark.parametrize("sampling,flag", [(Sampling(temperature=-1), "--temperature"),
                                           (Sampling(top_k=0), "--top_k"),
                                           (Sampling(top_p=0), "--top_p")])
def test_bad_sampling_options_are_named(sampling, flag):
    with pytest.raises(ValueError, match=flag):
        decode(_gpt(None), PROMPTS, 2, sampling)


def test_a_prompt_past_the_block_size_is_refused():
    """Prompt and new tokens but the last (never read back) fill the positions exactly."""
    assert decode(_gpt(None), PROMPTS, 44, Sampling(temperature=0)).shape == (3, 44)
    with pytest.raises(ValueError, match="block_size"):
        decode(_gpt(None), PROMPTS, 45)


def test_sampling_from_bos_counts_each_rows_tokens_before_its_first_eos():
    gpt = _gpt(CONFIGS[1])
    generator = torch.Generator().manual_seed(3)
    tokens, lengths = sample_from_bos(gpt, 16, 4, 5, 12, generator)
    expected = decode(gpt, torch.full((16, 1), 4), 12, Sampling(), torch.Generator().manual_seed(3),
                      eos_id=5)
    assert torch.equal(tokens[:, :expected.shape[1]], expected)
    for row, length in zip(tokens.tolist(), lengths.tolist()):
        assert length == (row.index(5) if 5 in row else 12)
        assert set(row[length:]) <= {5}  # a row that ended repeats EOS
    assert 0 < int((lengths < 12).sum()) < 16  # some rows ended, some ran to the budget


def test_all_done_decides_when_decoding_stops():
    """The stopping decision is ``all_done``'s (ranks agree through it), asked after each step."""
    gpt = _gpt(None)
    asked = []
    out = decode(gpt, PROMPTS, 6, Sampling(), torch.Generator().manual_seed(0), eos_id=None,
                 all_done=lambda done: asked.append(done) or len(asked) == 2)
    assert out.shape == (3, 2) and asked == [False, False]


@pytest.mark.parametrize("config", CONFIGS)
def test_dropping_ended_rows_keeps_every_sample(config, monkeypatch):
    # 64 rows from BOS, ending at many lengths: the cache sheds ended rows several times over.
    kept = []
    keep = KVCache.keep
    monkeypatch.setattr(KVCache, "keep", lambda cache, rows: kept.append(len(rows)) or keep(cache, rows))
    gpt = _gpt(config)
    prompts = torch.full((64, 1), 4)
    sampling = Sampling(temperature=1.0, top_k=10)
    every_row = decode(gpt, prompts, 40, sampling, torch.Generator().manual_seed(5), eos_id=5,
                       drop_ended_rows=False)
    dropped = decode(gpt, prompts, 40, sampling, torch.Generator().manual_seed(5), eos_id=5)
    ended = (every_row == 5).long().argmax(dim=1)
    assert len(set(ended[(every_row == 5).any(dim=1)].tolist())) > 5  # rows end at many lengths
    assert torch.equal(dropped, every_row)
    assert len(kept) > 2 and kept == sorted(kept, reverse=True), kept


def test_dropping_ended_rows_keeps_the_host_tables_rows():
    on_device = _gpt(CONFIGS[1])
    on_host = copy.deepcopy(on_device)
    host_tables = HostTables(on_host.embedding, "cpu")
    prompts = torch.full((48, 1), 4)
    expected = decode(on_device, prompts, 30, Sampling(), torch.Generator().manual_seed(2),
                      eos_id=5, drop_ended_rows=False)
    got = decode(on_host, prompts, 30, Sampling(), torch.Generator().manual_seed(2), eos_id=5,
                 host_tables=host_tables)
    assert torch.equal(got, expected)

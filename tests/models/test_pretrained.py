"""GPT-2 in HF format: exact logits in our backbone, zero-initialised OE tables, bad sources.

The shape and freezing that ``build_model`` derives from a checkpoint are in tests/models/test_build.py.
"""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from oe.models.embedding import OverEncodingConfig, TokenEmbedding  # noqa: E402
from oe.training.lm import LanguageModel, OptimizerConfig  # noqa: E402
from oe.models.gpt import GPT, BackboneConfig  # noqa: E402
from oe.models.pretrained import load_gpt2_weights, pretrained_backbone, save_gpt2  # noqa: E402

VOCAB = 97


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=48, n_embd=32, n_layer=2,
                                     n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(config)
    # Random biases and LayerNorm parameters too, so that a wrong mapping cannot hide.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln_" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    directory = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(directory)
    return directory


def _hf_logits(directory, tokens):
    model = transformers.GPT2LMHeadModel.from_pretrained(directory).eval()
    with torch.no_grad():
        return model(tokens).logits


def _tokens(batch=3, length=40, seed=1):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_logits_match_gpt2lmheadmodel(hf_dir):
    tokens = _tokens()
    backbone = pretrained_backbone(str(hf_dir), BackboneConfig(), VOCAB)
    assert (backbone.n_layer, backbone.n_head, backbone.n_embd, backbone.block_size) == (2, 4, 32, 48)
    ours = GPT(backbone, TokenEmbedding(VOCAB, backbone.n_embd), VOCAB).eval()
    load_gpt2_weights(ours, str(hf_dir))
    with torch.no_grad():
        got = ours(tokens)
    torch.testing.assert_close(got, _hf_logits(hf_dir, tokens), atol=1e-4, rtol=0)


def test_save_gpt2_round_trips_through_transformers(hf_dir, tmp_path):
    backbone = pretrained_backbone(str(hf_dir), BackboneConfig(), VOCAB)
    ours = GPT(backbone, TokenEmbedding(VOCAB, backbone.n_embd), VOCAB).eval()
    load_gpt2_weights(ours, str(hf_dir))
    save_gpt2(ours, tmp_path / "again")
    tokens = _tokens(seed=2)
    torch.testing.assert_close(_hf_logits(tmp_path / "again", tokens), _hf_logits(hf_dir, tokens),
                               atol=1e-6, rtol=0)


def _oe_model(hf_dir, **oe):
    config = OverEncodingConfig(orders=[2, 3], k=1, modulus=1009, init_std=0.0, combine="sum", **oe)
    return LanguageModel(vocab_size=VOCAB, pad_id=0, pretrained=str(hf_dir), over_encoding=config,
                         freeze_backbone=True, optimizer=OptimizerConfig(lr=1e-2, warmup_steps=0))


def test_zero_initialised_oe_step0_equals_gpt2(hf_dir):
    tokens = _tokens(seed=3).clamp(min=1)  # no pad id 0: every target counts, as in HF's loss
    model = _oe_model(hf_dir).eval()
    plain = LanguageModel(vocab_size=VOCAB, pretrained=str(hf_dir)).eval()
    hf = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        oe_logits = model(tokens)
        assert torch.equal(oe_logits, plain(tokens))
        loss_sum, n_targets, _ = model._loss({"input_ids": tokens})
        hf_out = hf(tokens, labels=tokens)
    torch.testing.assert_close(oe_logits, hf_out.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(loss_sum / n_targets, hf_out.loss, atol=1e-5, rtol=0)


def test_missing_files_and_other_model_types_are_refused(hf_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        (tmp_path / "config.json").write_text((hf_dir / "config.json").read_text())
        LanguageModel(vocab_size=VOCAB, pretrained=str(tmp_path))
    other = tmp_path / "bert"
    other.mkdir()
    config = json.loads((hf_dir / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type is 'bert'"):
        LanguageModel(vocab_size=VOCAB, pretrained=str(other))

"""build_model: every embedding kind, pretrained shape and weights, frozen backbone, mappings."""

from __future__ import annotations

import json

import pytest
import torch

from oe.models.build import build_arguments, build_model, table_parameters
from oe.models.config import ModelConfig
from oe.models.embedding import OverEncoding, OverEncodingConfig, TokenEmbedding
from oe.models.frequent_ngrams import FrequentNgramConfig, FrequentNgramEmbedding
from oe.models.gpt import BackboneConfig
from oe.models.heads import OutputHeadsConfig
from oe.models.pretrained import save_gpt2
from oe.models.protocols import NgramTableEmbedding
from oe.training.lm import LanguageModel

VOCAB = 11
TINY = BackboneConfig(n_layer=1, n_head=2, n_embd=16, block_size=32)
OE = OverEncodingConfig(orders=[2, 3], modulus=101)


def _tokens(seed: int = 0) -> torch.Tensor:
    return torch.randint(1, VOCAB, (2, 12), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def mined(tmp_path):
    """A mined n-gram file as oe.analysis.mining writes it: 3 bigrams and 3 trigrams."""
    path = tmp_path / "mined.jsonl"
    rows = [{"order": 2, "tokens": [i, i + 1], "count": 9 - i} for i in range(1, 4)]
    rows += [{"order": 3, "tokens": [i, i + 1, i + 2], "count": 5 - i} for i in range(1, 4)]
    path.write_text("\n".join(json.dumps(r) for r in [{"meta": {"vocab_size": VOCAB}}, *rows]))
    return FrequentNgramConfig(path=str(path), orders=[2, 3], top_k=3)


@pytest.fixture
def gpt2_dir(tmp_path):
    """A GPT-2 checkpoint in HF format, of a shape unlike the default backbone."""
    torch.manual_seed(1)
    source = build_model(VOCAB, backbone=BackboneConfig(n_layer=2, n_head=2, n_embd=24, block_size=40))
    return save_gpt2(source.gpt, tmp_path / "gpt2"), source.gpt.eval()


def test_each_embedding_kind_builds(mined) -> None:
    baseline = build_model(VOCAB, backbone=TINY)
    assert isinstance(baseline.gpt.embedding, TokenEmbedding) and baseline.heads is None
    assert not isinstance(baseline.gpt.embedding, NgramTableEmbedding)
    assert table_parameters(baseline.gpt) == []
    hashed = build_model(VOCAB, backbone=TINY, over_encoding=OE)
    frequent = build_model(VOCAB, backbone=TINY, frequent_ngrams=mined)
    for built, kind in ((hashed, OverEncoding), (frequent, FrequentNgramEmbedding)):
        assert isinstance(built.gpt.embedding, kind)
        assert isinstance(built.gpt.embedding, NgramTableEmbedding)
        tables = table_parameters(built.gpt)
        assert tables and all(any(p is q for q in built.gpt.parameters()) for p in tables)
        assert built.gpt(_tokens()).shape == (2, 12, VOCAB)
    heads = build_model(VOCAB, backbone=TINY, heads=OutputHeadsConfig(od_offsets=[2], lambdas=[0.5]))
    assert heads.heads is not None
    assert build_model(VOCAB, backbone=TINY, heads=OutputHeadsConfig()).heads is None  # empty


def test_model_kind_names_embedding_and_heads(mined) -> None:
    od = OutputHeadsConfig(od_offsets=[2, 3], lambdas=[0.5, 0.5])
    assert ModelConfig().kind == "baseline"
    assert ModelConfig(over_encoding=OverEncodingConfig(orders=[3, 2]), heads=od).kind == "oe123+od3"
    assert ModelConfig(frequent_ngrams=mined, heads=OutputHeadsConfig()).kind == "frequent123"
    assert LanguageModel(vocab_size=VOCAB, backbone=TINY, over_encoding=OE, heads=od).kind == "oe123+od3"


def test_bad_combinations_name_the_field(mined) -> None:
    with pytest.raises(ValueError, match="model.vocab_size must be >= 2"):
        build_model(1)
    with pytest.raises(ValueError, match="set one of model.over_encoding, model.frequent_ngrams, not over_encoding and frequent_ngrams"):
        build_model(VOCAB, backbone=TINY, over_encoding=OE, frequent_ngrams=mined)


def test_language_model_holds_what_build_model_builds() -> None:
    torch.manual_seed(3)
    built = build_model(VOCAB, backbone=TINY, over_encoding=OE)
    torch.manual_seed(3)
    lm = LanguageModel(vocab_size=VOCAB, backbone=TINY, over_encoding=OE)
    assert lm.model.state_dict().keys() == built.gpt.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(lm.model.state_dict().values(),
                                                  built.gpt.state_dict().values()))
    assert [id(p) for p in lm.table_parameters()] == [id(p) for p in table_parameters(lm.model)]


def test_pretrained_gives_shape_and_weights(gpt2_dir) -> None:
    path, source = gpt2_dir
    built = build_model(VOCAB, backbone=BackboneConfig(dropout=0.0), pretrained=str(path))
    assert (built.backbone.n_layer, built.backbone.n_embd, built.backbone.block_size) == (2, 24, 40)
    with torch.no_grad():
        assert torch.allclose(built.gpt.eval()(_tokens()), source(_tokens()), atol=1e-6)
    # A checkpoint rebuilds the shape without the source: the hyper-parameters hold it.
    lm = LanguageModel(vocab_size=VOCAB, pretrained=str(path))
    assert lm.hparams["backbone"] == built.backbone
    with pytest.raises(ValueError, match="model.backbone.n_embd is 64"):
        build_model(VOCAB, backbone=BackboneConfig(n_embd=64), pretrained=str(path))
    with pytest.raises(ValueError, match=f"vocab_size is {VOCAB} but the data's tokenizer has 50"):
        build_model(50, pretrained=str(path))


@pytest.mark.parametrize("kind", ["hashed", "frequent"])
def test_frozen_backbone_trains_only_the_tables(gpt2_dir, mined, kind) -> None:
    path, _ = gpt2_dir
    ngrams = ({"over_encoding": OverEncodingConfig(orders=[2, 3], modulus=101)} if kind == "hashed"
              else {"frequent_ngrams": mined})
    gpt = build_model(VOCAB, pretrained=str(path), freeze_backbone=True, **ngrams).gpt
    trainable = {n for n, p in gpt.named_parameters() if p.requires_grad}
    tables = {id(p) for p in table_parameters(gpt)}
    assert tables <= {id(p) for p in gpt.parameters() if p.requires_grad}
    assert trainable and all(n.startswith("embedding.") and not n.startswith("embedding.token.")
                             for n in trainable)
    before = {n: p.detach().clone() for n, p in gpt.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in gpt.parameters() if p.requires_grad], lr=1e-2)
    tokens = torch.tensor([[1, 2, 3, 4, 5] * 3, [3, 4, 5, 1, 2] * 3])  # mined n-grams among them
    for _ in range(2):
        logits = gpt(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    changed = {n for n, p in gpt.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and changed <= trainable
    with pytest.raises(ValueError, match="model.freeze_backbone needs n-gram tables"):
        build_model(VOCAB, pretrained=str(path), freeze_backbone=True)


def test_a_mapping_section_builds_the_same_model() -> None:
    section = {"backbone": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 32},
               "over_encoding": {"orders": [2, 3], "modulus": 101}, "heads": None,
               "optimizer": {"lr": 1.0}, "vocab_size": VOCAB}
    arguments = build_arguments(section)
    assert arguments["backbone"] == TINY and arguments["over_encoding"] == OE
    assert "optimizer" not in arguments  # training only
    torch.manual_seed(0)
    a = build_model(**arguments).gpt
    torch.manual_seed(0)
    b = build_model(VOCAB, backbone=TINY, over_encoding=OE).gpt
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ValueError, match=r"model.over_encoding: unknown field\(s\) modulo"):
        build_arguments({"over_encoding": {"modulo": 3}})
    with pytest.raises(ValueError, match="model.encoder: unknown field"):
        build_arguments({"encoder": {}})
    with pytest.raises(ValueError, match="model.backbone: expected a mapping of BackboneConfig"):
        build_arguments({"backbone": 3})

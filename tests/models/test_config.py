"""ModelConfig: the one list of a model's settings, checked once, read back from checkpoints."""

from __future__ import annotations

import dataclasses

import lightning
import pytest
import torch

from oe.models.build import build_model
from oe.models.config import ModelConfig
from oe.models.embedding import OverEncodingConfig
from oe.models.frequent_ngrams import FrequentNgramConfig
from oe.models.gpt import BackboneConfig
from oe.models.heads import OutputHeadsConfig

TINY = BackboneConfig(n_layer=2, n_head=2, n_embd=16, block_size=32)


@pytest.mark.parametrize("settings, message", [
    (dict(vocab_size=1), "model.vocab_size must be >= 2"),
    (dict(pad_id=6), r"model.pad_id must be a token id in 0..5, got 6"),
    (dict(backbone=BackboneConfig(n_embd=10, n_head=4)), "model.backbone.n_embd"),
    (dict(over_encoding=OverEncodingConfig(orders=[2, 3], k=3)),
     r"model width 16 \(model.backbone.n_embd\) is not divisible by model.over_encoding.k"),
    (dict(over_encoding=OverEncodingConfig(heads=3)), "model.over_encoding.heads"),
    (dict(over_encoding=OverEncodingConfig(modulus=0)), "model.over_encoding.modulus must be >= 1"),
    (dict(over_encoding=OverEncodingConfig(modulus=2**40)), "model.over_encoding.modulus must be below 2"),
    (dict(over_encoding=OverEncodingConfig(orders=[1, 2])), "model.over_encoding.orders holds 1"),
    (dict(over_encoding=OverEncodingConfig(orders=[2, 9])),
     r"model.over_encoding.orders holds \[9\]: n-gram orders run from 2 to 8"),
    (dict(over_encoding=OverEncodingConfig(orders=[])), "model.over_encoding.orders must list"),
    (dict(over_encoding=OverEncodingConfig(orders=[2, 2])), "model.over_encoding.orders repeats"),
    (dict(over_encoding=OverEncodingConfig(layers=[2])),
     r"model.over_encoding.layers holds \[2\].*model.backbone.n_layer is 2"),
    (dict(over_encoding=OverEncodingConfig(hash="crc")), "model.over_encoding.hash"),
    (dict(over_encoding=OverEncodingConfig(combine="max")), "model.over_encoding.combine"),
    (dict(heads=OutputHeadsConfig(od_offsets=[1], lambdas=[1.0])), "model.heads.od_offsets"),
    (dict(frequent_ngrams=FrequentNgramConfig(top_k=0)), "model.frequent_ngrams.top_k"),
    (dict(over_encoding=OverEncodingConfig(), frequent_ngrams=FrequentNgramConfig()),
     "set one of model.over_encoding, model.frequent_ngrams"),
])
def test_a_bad_setting_is_one_error_naming_its_field(settings, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{"backbone": TINY, **settings})


def test_every_embedding_field_is_a_kind_build_model_builds():
    from oe.models.build import EMBEDDING_KINDS
    from oe.models.config import EMBEDDING_FIELDS

    assert set(EMBEDDING_FIELDS) == set(EMBEDDING_KINDS)
    assert set(EMBEDDING_FIELDS) <= {f.name for f in dataclasses.fields(ModelConfig)}


def test_every_way_in_checks_the_same_way():
    """The constructor, a mapping section (a checkpoint, an export), a changed copy and
    build_model all refuse the same value with the same message."""
    bad = {"orders": [2, 9]}
    message = r"model.over_encoding.orders holds \[9\]"
    with pytest.raises(ValueError, match=message):
        ModelConfig(backbone=TINY, over_encoding=OverEncodingConfig(**bad))
    with pytest.raises(ValueError, match=r"^run.ckpt: " + message):
        ModelConfig.from_section({"backbone": dataclasses.asdict(TINY), "over_encoding": bad},
                                 "run.ckpt")
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(ModelConfig(backbone=TINY), over_encoding=OverEncodingConfig(**bad))
    with pytest.raises(ValueError, match=message):
        build_model(vocab_size=11, backbone=TINY, over_encoding=OverEncodingConfig(**bad))


def test_the_backbone_of_a_pretrained_model_is_checked_when_it_is_read():
    """With a pretrained source the shape comes from its checkpoint: the tables are checked
    against it when the model is built, not against the config's default shape."""
    config = ModelConfig(pretrained="gpt2", over_encoding=OverEncodingConfig(orders=[2, 3], k=3))
    assert config.backbone == BackboneConfig()  # 128 / (3 * 2) is not whole, and not checked


def test_a_section_reads_mappings_and_refuses_unknown_fields():
    section = {"vocab_size": 11, "backbone": dataclasses.asdict(TINY),
               "over_encoding": {"orders": [2, 3], "modulus": 101}, "optimizer": {"lr": 1.0},
               "_instantiator": "lightning.pytorch.cli.instantiate_module"}
    config = ModelConfig.from_section(section)
    assert config.backbone == TINY and config.over_encoding == OverEncodingConfig(orders=[2, 3], modulus=101)
    assert config.section()["over_encoding"]["modulus"] == 101  # an export's oe_model
    assert ModelConfig.from_section(config.section()) == config
    with pytest.raises(ValueError, match="model.encoder: unknown field"):
        ModelConfig.from_section({"encoder": {}})
    with pytest.raises(ValueError, match=r"model.over_encoding: unknown field\(s\) modulo"):
        ModelConfig.from_section({"over_encoding": {"modulo": 3}})
    with pytest.raises(ValueError, match="model.backbone: expected a mapping of BackboneConfig"):
        ModelConfig.from_section({"backbone": 3})


def test_a_trained_config_rebuilds_without_its_source():
    heads = OutputHeadsConfig(od_offsets=[2], lambdas=[0.5])
    config = ModelConfig(vocab_size=11, backbone=TINY, heads=heads, freeze_backbone=True,
                         over_encoding=OverEncodingConfig(orders=[2], modulus=101))
    assert config.trained() == dataclasses.replace(config, freeze_backbone=False)
    assert config.trained(heads=False).heads is None


def test_a_checkpoint_written_before_model_config_loads(tmp_path):
    """oe fit's checkpoints have always recorded the model's settings flat, as LightningCLI
    parsed them (sections as mappings, the optimiser, Lightning's instantiator); older ones lack
    settings added since (read as their defaults). Both load into the same network."""
    from oe.huggingface.load import load_for_evaluation
    from oe.training.lm import LanguageModel

    tables = OverEncodingConfig(orders=[2, 3], modulus=101, shard_tables=False)
    torch.manual_seed(0)
    lm = LanguageModel(vocab_size=11, pad_id=0, backbone=TINY, over_encoding=tables)
    recorded = {"vocab_size": 11, "pad_id": 0, "backbone": dataclasses.asdict(TINY),
                "over_encoding": dataclasses.asdict(tables), "heads": None,
                "optimizer": {"lr": 0.0003, "betas": [0.9, 0.98], "weight_decay": 0.1,
                              "warmup_steps": 1000, "min_lr_ratio": 0.1},
                "frequent_ngrams": None, "pretrained": None, "freeze_backbone": False,
                "_instantiator": "lightning.pytorch.cli.instantiate_module"}
    older = {key: value for key, value in recorded.items() if key != "frequent_ngrams"}
    older["over_encoding"] = {k: v for k, v in recorded["over_encoding"].items()
                              if k not in ("hash", "layers", "gate", "per_layer_tables")}
    tokens = torch.randint(0, 11, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = lm.model.eval()(tokens)
    for name, hparams in (("cli", recorded), ("older", older)):
        path = tmp_path / f"{name}.ckpt"
        torch.save({"hyper_parameters": hparams, "state_dict": lm.state_dict(),
                    "pytorch-lightning_version": lightning.__version__}, path)
        network, _ = load_for_evaluation(path)
        with torch.no_grad():
            assert torch.equal(network.eval()(tokens), expected), name
        again = LanguageModel.load_from_checkpoint(path, weights_only=False)
        assert again.model_config == lm.model_config, name

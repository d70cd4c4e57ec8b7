"""``ModelConfig``: the one list of a model's settings, checked once.

A config's ``model`` section is ModelConfig's fields beside the training optimiser:

    model:
      backbone: {n_layer: 12, n_embd: 128}
      over_encoding: {orders: [2, 3], modulus: 12800001}
      optimizer: {lr: 0.003}

``oe.training.lm.LanguageModel`` takes the optimiser and ``**settings``, which it hands to
``ModelConfig(**settings)``. LightningCLI's parser (jsonargparse) follows ``**settings`` into
that call and reads ModelConfig's fields, types, defaults and help as the LightningModule's own,
so the YAML and the flags stay flat (``--model.over_encoding.modulus 1009``) while the settings
are written down here alone. Lightning records the hyper-parameters flat as well (every field,
and the optimiser), as checkpoints always have: ``from_section`` reads them back, from checkpoints
written before this class too, and an export keeps the same fields as its ``oe_model``.

``build_model`` takes a ModelConfig; the parse check of ``oe fit`` (``oe.cli.config``), the
LightningModule, the checkpoint and export loaders all build one, so every model passes
``__post_init__``'s checks, and a bad value is one ValueError naming its field
(``model.over_encoding.orders ...``). Two checks need more than the settings and wait for the
build: a table modulus that is a multiple of the vocabulary (``oe.models.embedding.plan_tables``:
oe fit learns the vocabulary from the data), and, with ``pretrained``, the tables against the
backbone read from the checkpoint (``check_tables_fit``, called by ``build_model``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from oe.models.embedding import COMBINES, TABLE_INITS, OverEncodingConfig
from oe.models.frequent_ngrams import FrequentNgramConfig
from oe.models.gpt import BackboneConfig, check_backbone
from oe.models.heads import OutputHeadsConfig, check_heads
from oe.models.ngram import HASH_FAMILIES, MAX_MODULUS, MAX_ORDER, MAX_VOCAB

# The input embeddings beside plain tokens, by the field that configures each (a model has at
# most one; oe.models.build.EMBEDDING_KINDS builds each).
EMBEDDING_FIELDS = ("over_encoding", "frequent_ngrams")
# Fields of a recorded model section that are not the model's: the training optimiser, and what
# LightningCLI adds to the hyper-parameters it records.
NOT_MODEL_FIELDS = ("optimizer", "_instantiator", "_class_path")


@dataclass
class ModelConfig:
    """The model: a GPT backbone, one input embedding, optional extra heads.

    Args:
        vocab_size: token ids are ``0 .. vocab_size-1`` (oe fit links it from the data module).
        pad_id: padding id, never counted in the loss (linked from the data module).
        backbone: the transformer's shape.
        over_encoding: the n-gram tables; None for the baseline.
        heads: training-only extra heads (Over-Decoding, MTP); None for the next-token head alone.
        frequent_ngrams: mined n-gram rows (oe.analysis.mining) instead of hashed tables; None: none.
        pretrained: GPT-2 weights in HF format (hub id or local directory) for the backbone,
            whose shape then comes from the checkpoint; n-gram tables start afresh.
        freeze_backbone: train only the n-gram tables (and their projection).
    """

    vocab_size: int = 6
    pad_id: int = 0
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    over_encoding: OverEncodingConfig | None = None
    heads: OutputHeadsConfig | None = None
    frequent_ngrams: FrequentNgramConfig | None = None
    pretrained: str | None = None
    freeze_backbone: bool = False

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # sections given as mappings (a recorded config)
            section = _SECTIONS.get(f.name)
            if section is not None:
                setattr(self, f.name, _dataclass_of(section, getattr(self, f.name), f"model.{f.name}"))
        self._check()

    def _check(self) -> None:
        if not 2 <= self.vocab_size < MAX_VOCAB:
            raise ValueError(f"model.vocab_size must be >= 2 and below 2^31, got {self.vocab_size}")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"model.pad_id must be a token id in 0..{self.vocab_size - 1}, "
                             f"got {self.pad_id}")
        given = [name for name in EMBEDDING_FIELDS if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"set one of {', '.join(f'model.{n}' for n in EMBEDDING_FIELDS)}, "
                             f"not {' and '.join(given)}")
        check_backbone(self.backbone)
        if self.over_encoding is not None:
            _check_over_encoding(self.over_encoding)
            if self.pretrained is None:  # else the backbone comes from the checkpoint
                check_tables_fit(self.over_encoding, self.backbone)
        if self.frequent_ngrams is not None:
            _check_frequent_ngrams(self.frequent_ngrams)
        if self.heads is not None:
            check_heads(self.heads)

    @classmethod
    def from_section(cls, section: Mapping[str, Any], source: str | None = None) -> ModelConfig:
        """The config of a ``model`` section given as a mapping: a checkpoint's hyper-parameters,
        an export's ``oe_model``, a parsed config's section. Sub-sections may be mappings or the
        config dataclasses; the optimiser and Lightning's records are left out; a missing field
        takes its default. Errors name the field, after ``source`` (the file) when given."""
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            unknown = [key for key in section if key not in names and key not in NOT_MODEL_FIELDS]
            if unknown:
                raise ValueError(f"model.{unknown[0]}: unknown field; expected one of "
                                 f"{', '.join([*names, NOT_MODEL_FIELDS[0]])}")
            return cls(**{key: value for key, value in section.items() if key in names})
        except ValueError as err:
            if source is None:
                raise
            raise ValueError(f"{source}: {err}") from err

    def trained(self, heads: bool = True) -> ModelConfig:
        """The config that rebuilds a trained network from its recorded settings: the recorded
        shape, no pretrained source read again, nothing frozen (its weights follow). ``heads``
        False leaves out the training-only heads (evaluation and generation need only the
        network)."""
        return dataclasses.replace(self, pretrained=None, freeze_backbone=False,
                                   heads=self.heads if heads else None)

    def section(self) -> dict[str, Any]:
        """The fields as plain values (sections as mappings): an export's ``oe_model``."""
        return dataclasses.asdict(self)

    @property
    def kind(self) -> str:
        """A short name of the model kind, e.g. ``baseline``, ``oe123``, ``frequent12+od3``."""
        extra = "" if self.heads is None or self.heads.empty else "+" + self.heads.kind
        if self.frequent_ngrams is not None:
            return "frequent" + "".join(str(n) for n in [1, *sorted(self.frequent_ngrams.orders)]) + extra
        if self.over_encoding is None:
            return "baseline" + extra
        return "oe" + "".join(str(n) for n in [1, *sorted(self.over_encoding.orders)]) + extra


_SECTIONS: dict[str, type] = {"backbone": BackboneConfig, "over_encoding": OverEncodingConfig,
                              "heads": OutputHeadsConfig, "frequent_ngrams": FrequentNgramConfig}


def _dataclass_of(cls: type, value: Any, where: str) -> Any:
    if value is None or isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected a mapping of {cls.__name__} fields, got {value!r}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - fields)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}; "
                         f"expected {', '.join(sorted(fields))}")
    return cls(**value)


def _check_over_encoding(config: OverEncodingConfig) -> None:
    """The first bad field of the n-gram tables' settings, as one ValueError naming it."""
    where = "model.over_encoding"
    if config.hash not in HASH_FAMILIES:
        raise ValueError(f"{where}.hash must be one of {', '.join(HASH_FAMILIES)}, "
                         f"got {config.hash!r}")
    if config.gate and not config.orders:
        raise ValueError(f"{where}.gate needs n-gram tables to gate, but {where}.orders is empty")
    if config.heads is not None and config.heads < 1:
        raise ValueError(f"{where}.heads must be >= 1, got {config.heads}")
    if config.heads is not None and config.k not in (1, config.heads):
        raise ValueError(f"{where}.heads ({config.heads}) and {where}.k ({config.k}) name the "
                         "same number (hashes per order); set one of them")
    if not config.layers:
        raise ValueError(f"{where}.layers must list at least one block index (0: the input)")
    if len(set(config.layers)) != len(config.layers):
        raise ValueError(f"{where}.layers repeats a block: {config.layers}")
    if any(layer < 0 for layer in config.layers):
        raise ValueError(f"{where}.layers holds {[l for l in config.layers if l < 0]}, outside "
                         "the backbone's blocks >= 0")
    if config.table_init not in TABLE_INITS:
        raise ValueError(f"{where}.table_init must be one of {', '.join(TABLE_INITS)}, "
                         f"got {config.table_init!r}")
    if config.table_init == "token_mean" and config.hash != "polynomial":
        raise ValueError(f"{where}.table_init token_mean reads row r as the n-gram whose "
                         f"polynomial id is r; hash {config.hash!r} has no such inverse: use "
                         "hash polynomial, or table_init normal or zero")
    if config.combine not in COMBINES:
        raise ValueError(f"{where}.combine must be one of {', '.join(COMBINES)}, "
                         f"got {config.combine!r}")
    if config.combine == "rmsnorm_sum" and config.layers != [0]:
        raise ValueError(f"{where}.combine rmsnorm_sum fuses the input embedding with the "
                         f"memory, so {where}.layers must be [0], got {config.layers}")
    scale = config.ngram_scale
    if scale != "sqrt_d" and (isinstance(scale, (str, bool)) or not isinstance(scale, (int, float))
                              or not math.isfinite(scale) or scale <= 0):
        raise ValueError(f"{where}.ngram_scale must be a number > 0 or 'sqrt_d', got {scale!r}")
    if config.combine == "rmsnorm_sum" and scale != 1.0:
        raise ValueError(f"{where}.ngram_scale ({scale!r}) has no effect under combine "
                         "rmsnorm_sum, whose RMSNorm removes any scale of the memory; leave it at 1")
    if config.k < 1:
        raise ValueError(f"{where}.k must be >= 1, got {config.k}")
    if not 1 <= config.modulus < MAX_MODULUS:
        raise ValueError(f"{where}.modulus must be >= 1, got {config.modulus}" if config.modulus < 1
                         else f"{where}.modulus must be below 2^40, got {config.modulus}")
    if not config.orders:
        raise ValueError(f"{where}.orders must list at least one n-gram order (>= 2)")
    if any(order < 2 for order in config.orders):
        raise ValueError(f"{where}.orders holds {min(config.orders)}: n-gram orders must be >= 2 "
                         "(the 1-gram embedding is always present)")
    beyond = [order for order in config.orders if order > MAX_ORDER]
    if beyond:
        raise ValueError(f"{where}.orders holds {beyond}: n-gram orders run from 2 to {MAX_ORDER}")
    if len(set(config.orders)) != len(config.orders):
        raise ValueError(f"{where}.orders repeats an order: {config.orders}")


def check_tables_fit(config: OverEncodingConfig, backbone: BackboneConfig) -> None:
    """The n-gram tables against the backbone they feed: each injection layer one of its
    blocks, and the width split into whole slices (one per order and hash)."""
    outside = [layer for layer in config.layers if layer >= backbone.n_layer]
    if outside:
        raise ValueError(f"model.over_encoding.layers holds {outside}, outside the backbone's "
                         f"blocks 0..{backbone.n_layer - 1} (model.backbone.n_layer is "
                         f"{backbone.n_layer})")
    heads = config.num_heads
    name = "k" if config.heads is None else "heads"
    if backbone.n_embd % (heads * len(config.orders)):
        raise ValueError(
            f"model width {backbone.n_embd} (model.backbone.n_embd) is not divisible by "
            f"model.over_encoding.{name} * len(model.over_encoding.orders) = {heads} * "
            f"{len(config.orders)}; choose {name} so that the slice width is whole")


def _check_frequent_ngrams(config: FrequentNgramConfig) -> None:
    if config.top_k < 1:
        raise ValueError(f"model.frequent_ngrams.top_k must be >= 1, got {config.top_k}")
    if not config.orders or min(config.orders) < 2 or len(set(config.orders)) != len(config.orders):
        raise ValueError(f"model.frequent_ngrams.orders must be distinct orders >= 2, got {config.orders}")
    if config.init not in ("mean", "zero"):
        raise ValueError(f"model.frequent_ngrams.init must be 'mean' or 'zero', got {config.init!r}")

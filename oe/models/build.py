"""``build_model``: the network of a config, for training and for every tool alike.

A model is a GPT backbone, one input embedding (tokens; hashed Over-Encoding tables; mined
frequent n-gram rows), optionally GPT-2 weights from a pretrained checkpoint (which then fixes
the backbone's shape), optionally frozen but for its n-gram part, and optionally training-only
output heads. The LightningModule (``oe.training.lm``) builds it here and adds only the training
loop; evaluation, the memory estimate, experiments and benchmarks build it here too.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from oe.models.embedding import (OverEncoding, OverEncodingConfig, TokenEmbedding,
                                 check_over_encoding)
from oe.models.frequent_ngrams import FrequentNgramConfig, FrequentNgramEmbedding
from oe.models.gpt import GPT, BackboneConfig
from oe.models.heads import OutputHeads, OutputHeadsConfig
from oe.models.pretrained import freeze_all_but_ngrams, load_gpt2_weights, pretrained_backbone
from oe.models.protocols import NgramTableEmbedding


# The input embeddings beside plain tokens, by the model-section field that configures each. A
# new kind is one module in oe/models/ whose class takes (vocab_size, n_embd, config, pad_id), one
# entry here, and its config field on build_model and LanguageModel.
EMBEDDING_KINDS: dict[str, type[nn.Module]] = {
    "over_encoding": OverEncoding,
    "frequent_ngrams": FrequentNgramEmbedding,
}


def table_parameters(model: GPT) -> list[nn.Parameter]:
    """The n-gram tables of ``model``'s input embedding; none for the token embedding."""
    embedding = model.embedding
    return embedding.table_parameters() if isinstance(embedding, NgramTableEmbedding) else []


@dataclass
class BuiltModel:
    """What ``build_model`` returns.

    Attributes:
        gpt: the network: input embedding, transformer, next-token head.
        heads: the training-only extra heads (Over-Decoding, MTP); None without them.
        backbone: the backbone's shape as built (a pretrained checkpoint's own shape).
    """

    gpt: GPT
    heads: OutputHeads | None
    backbone: BackboneConfig


def build_model(
    vocab_size: int,
    pad_id: int = 0,
    backbone: BackboneConfig = BackboneConfig(),
    over_encoding: OverEncodingConfig | None = None,
    heads: OutputHeadsConfig | None = None,
    frequent_ngrams: FrequentNgramConfig | None = None,
    pretrained: str | None = None,
    freeze_backbone: bool = False,
) -> BuiltModel:
    """The model of a config's ``model`` section (the fields of ``LanguageModel`` but its optimiser).

    Parameters are created on the current default device (``with torch.device("meta")``: no
    memory); Over-Encoding tables inside ``deferred_ngram_tables()`` get no values.
    """
    if vocab_size < 2:
        raise ValueError(f"model.vocab_size must be >= 2, got {vocab_size}")
    given = {name: config for name, config in
             (("over_encoding", over_encoding), ("frequent_ngrams", frequent_ngrams))
             if config is not None}
    if len(given) > 1:
        raise ValueError(f"set one of {', '.join(f'model.{n}' for n in EMBEDDING_KINDS)}, "
                         f"not {' and '.join(given)}")
    if pretrained is not None:
        backbone = pretrained_backbone(pretrained, backbone, vocab_size)
    if over_encoding is not None:
        check_over_encoding(over_encoding, backbone.n_layer)
    if given:
        (name, config), = given.items()
        embedding = EMBEDDING_KINDS[name](vocab_size, backbone.n_embd, config, pad_id)
    else:
        embedding = TokenEmbedding(vocab_size, backbone.n_embd)
    gpt = GPT(backbone, embedding, vocab_size)
    if pretrained is not None:
        load_gpt2_weights(gpt, pretrained)
        if isinstance(embedding, FrequentNgramEmbedding) or (
                isinstance(embedding, OverEncoding) and embedding.config.table_init == "token_mean"):
            embedding.reset_ngram_tables()  # rows start from the loaded 1-gram table
    if freeze_backbone:
        freeze_all_but_ngrams(gpt)
    extra = None if heads is None or heads.empty else OutputHeads(heads, backbone, vocab_size, pad_id)
    return BuiltModel(gpt=gpt, heads=extra, backbone=backbone)


def model_kind(over_encoding: OverEncodingConfig | None, frequent_ngrams: FrequentNgramConfig | None,
               heads: OutputHeadsConfig | None) -> str:
    """A short name of the model kind, e.g. ``baseline``, ``oe123``, ``frequent12+od3``."""
    extra = "" if heads is None or heads.empty else "+" + heads.kind
    if frequent_ngrams is not None:
        return "frequent" + "".join(str(n) for n in [1, *sorted(frequent_ngrams.orders)]) + extra
    if over_encoding is None:
        return "baseline" + extra
    return "oe" + "".join(str(n) for n in [1, *sorted(over_encoding.orders)]) + extra


# -- a model section read as a mapping (a YAML file, a checkpoint's hyper-parameters) -----------

def _model_settings() -> tuple[dict[str, type], tuple[str, ...]]:
    """``build_model``'s parameters, the one list of model settings: those typed by a config
    dataclass (sections, read from mappings) and the plain ones."""
    hints = typing.get_type_hints(build_model)
    sections, plain = {}, []
    for name in inspect.signature(build_model).parameters:
        types = [t for t in typing.get_args(hints[name]) or (hints[name],)
                 if dataclasses.is_dataclass(t)]
        if types:
            sections[name] = types[0]
        else:
            plain.append(name)
    return sections, tuple(plain)


_SECTIONS, _PLAIN = _model_settings()
# Training-only fields, and what Lightning's CLI adds to the hyper-parameters it records.
_NOT_BUILT = ("optimizer", "_instantiator", "_class_path")


def build_arguments(section: Mapping[str, Any], where: str = "model") -> dict[str, Any]:
    """``build_model``'s keyword arguments from a ``model`` section given as a mapping.

    Sub-sections may be mappings or the config dataclasses already; an unknown field is one
    ValueError naming it.
    """
    arguments: dict[str, Any] = {}
    for key, value in section.items():
        if key in _NOT_BUILT:
            continue
        if key in _PLAIN:
            arguments[key] = value
        elif key in _SECTIONS:
            arguments[key] = _dataclass_of(_SECTIONS[key], value, f"{where}.{key}")
        else:
            known = ", ".join((*_PLAIN, *_SECTIONS, *_NOT_BUILT[:1]))
            raise ValueError(f"{where}.{key}: unknown field; expected one of {known}")
    return arguments


def trained_model_arguments(section: Mapping[str, Any], where: str = "model",
                            heads: bool = True) -> dict[str, Any]:
    """``build_model``'s arguments for a trained network from the model section it was saved
    with (a checkpoint's hyper-parameters, an export's config): its recorded shape, no
    pretrained source read again, nothing frozen (its weights follow). ``heads`` False leaves
    out the training-only heads (evaluation and generation need only the network)."""
    arguments = build_arguments(section, where)
    arguments.update(pretrained=None, freeze_backbone=False)
    if not heads:
        arguments["heads"] = None
    return arguments


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

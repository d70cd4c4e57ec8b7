"""``build_model``: the network of a ``ModelConfig`` (``oe.models.config``), for training and
for every tool alike.

A model is a GPT backbone, one input embedding (tokens; hashed Over-Encoding tables; mined
frequent n-gram rows), optionally GPT-2 weights from a pretrained checkpoint (which then fixes
the backbone's shape), optionally frozen but for its n-gram part, and optionally training-only
output heads. The LightningModule (``oe.training.lm``) builds it here and adds only the training
loop; evaluation, the memory estimate, experiments and benchmarks build it here too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from oe.models.config import ModelConfig, check_tables_fit
from oe.models.embedding import OverEncoding, TokenEmbedding
from oe.models.frequent_ngrams import FrequentNgramEmbedding
from oe.models.gpt import GPT, BackboneConfig
from oe.models.heads import OutputHeads
from oe.models.pretrained import freeze_all_but_ngrams, load_gpt2_weights, pretrained_backbone
from oe.models.protocols import NgramTableEmbedding


# The input embeddings beside plain tokens, by the model-section field that configures each. A
# new kind is one module in oe/models/ whose class takes (vocab_size, n_embd, config, pad_id), one
# entry here, and its config field on ModelConfig (with its checks, and in EMBEDDING_FIELDS).
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


def build_model(*args: Any, **fields: Any) -> BuiltModel:
    """The model of a ``ModelConfig``: ``build_model(config)``, or ``build_model(vocab_size,
    backbone=..., ...)`` with its fields (``ModelConfig(*args, **fields)``, checked as any).

    Parameters are created on the current default device (``with torch.device("meta")``: no
    memory); Over-Encoding tables inside ``deferred_ngram_tables()`` get no values.
    """
    single = len(args) == 1 and not fields and isinstance(args[0], ModelConfig)
    config = args[0] if single else ModelConfig(*args, **fields)
    vocab_size, pad_id, backbone = config.vocab_size, config.pad_id, config.backbone
    if config.pretrained is not None:
        backbone = pretrained_backbone(config.pretrained, backbone, vocab_size)
        if config.over_encoding is not None:
            check_tables_fit(config.over_encoding, backbone)
    given = [(name, getattr(config, name)) for name in EMBEDDING_KINDS
             if getattr(config, name) is not None]
    if given:
        (name, settings), = given
        embedding = EMBEDDING_KINDS[name](vocab_size, backbone.n_embd, settings, pad_id)
    else:
        embedding = TokenEmbedding(vocab_size, backbone.n_embd)
    gpt = GPT(backbone, embedding, vocab_size)
    if config.pretrained is not None:
        load_gpt2_weights(gpt, config.pretrained)
        if isinstance(embedding, FrequentNgramEmbedding) or (
                isinstance(embedding, OverEncoding) and embedding.config.table_init == "token_mean"):
            embedding.reset_ngram_tables()  # rows start from the loaded 1-gram table
    if config.freeze_backbone:
        freeze_all_but_ngrams(gpt)
    heads = config.heads
    extra = None if heads is None or heads.empty else OutputHeads(heads, backbone, vocab_size, pad_id)
    return BuiltModel(gpt=gpt, heads=extra, backbone=backbone)


# -- a model section read as a mapping (a YAML file, a checkpoint's hyper-parameters) -----------

def build_arguments(section: Mapping[str, Any]) -> dict[str, Any]:
    """``build_model``'s keyword arguments (``ModelConfig``'s fields, checked) from a ``model``
    section given as a mapping (``ModelConfig.from_section``)."""
    config = ModelConfig.from_section(section)
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}

"""The Hugging Face classes of an exported ``oe`` model with n-gram parts (``trust_remote_code``).

An exported directory names ``modeling_oe.py`` in its ``config.json`` ``auto_map``; that file
imports ``OEConfig`` and ``OEForCausalLM`` from here, so ``oe`` must be installed to load it. The
network is built by ``oe.models.build.build_model`` from the model section kept in the config
(``oe_model``), so it is the very network that was trained, n-gram id function included.

Generation with a key/value cache: ``generate`` hands the model a transformers ``Cache``, which
the backbone fills through ``_CacheView``; a cached step embeds its new token from the last few
tokens of the row (``ngram_context``, taken from the whole ``input_ids`` in
``prepare_inputs_for_generation``), exactly as ``oe.models.decoding.decode`` does. Rows with padding
(an ``attention_mask`` holding zeros) are refused: the backbone attends over whole rows.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from oe.models.build import build_model
from oe.models.config import ModelConfig

MODEL_TYPE = "oe_gpt"


class OEConfig(PretrainedConfig):
    """``oe_model``: the model's settings, ``ModelConfig``'s fields (vocab_size, pad_id,
    backbone, ...)."""

    model_type = MODEL_TYPE

    def __init__(self, oe_model: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.oe_model = oe_model or {}
        self.use_cache = kwargs.pop("use_cache", True)
        backbone = self.oe_model.get("backbone") or {}
        # The usual names, for tools that read them (lm-eval's max length, the cache's layers).
        kwargs.setdefault("tie_word_embeddings", False)  # the backbone ties its head itself
        for name, value in (("vocab_size", self.oe_model.get("vocab_size")),
                            ("n_positions", backbone.get("block_size")),
                            ("num_hidden_layers", backbone.get("n_layer")),
                            ("num_attention_heads", backbone.get("n_head")),
                            ("hidden_size", backbone.get("n_embd"))):
            if value is not None:
                kwargs.setdefault(name, value)
        super().__init__(**kwargs)


class _CacheView:
    """The backbone's cache interface (``append``, ``length``) over a transformers ``Cache``."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.length = cache.get_seq_length()

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cache.update(k, v, layer)


class OEForCausalLM(PreTrainedModel, GenerationMixin):
    """``model``: the GPT (input embedding, blocks, tied head); ``heads``: training-only extra
    heads (Over-Decoding, MTP), kept so that training can go on from the export, never used here.
    Parameter names are those of ``oe.training.lm.LanguageModel``'s state dict."""

    config_class = OEConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _supports_cache_class = True

    def __init__(self, config: OEConfig) -> None:
        super().__init__(config)
        built = build_model(ModelConfig.from_section(config.oe_model, "config.json: oe_model").trained())
        self.model = built.gpt
        self.heads = built.heads
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        """Every weight comes from the exported files; ``build_model`` already initialised new ones."""

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.model.embedding.token

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, *args: Any, **kwargs: Any) -> dict:
        inputs = super().prepare_inputs_for_generation(input_ids, *args, **kwargs)
        inputs["ngram_context"] = input_ids[:, -(self.model.embedding.context_size + 1):]
        return inputs

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        labels: torch.LongTensor | None = None,
        ngram_context: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Logits [B, T, V] of ``input_ids`` [B, T] (the new tokens when ``cache`` holds earlier ones).

        ``ngram_context`` [B, L]: the row's last tokens up to and including the new one, needed
        for a cached step of an n-gram model (``generate`` passes it). Other keywords of
        transformers' calling convention (``return_dict``) are accepted; attentions and hidden
        states are not returned.
        """
        asked = [k for k in ("output_attentions", "output_hidden_states") if kwargs.get(k)]
        if asked or kwargs.get("return_dict") is False:
            raise ValueError(f"{', '.join(asked) or 'return_dict=False'}: this model returns its "
                             "logits (and cache) as a CausalLMOutputWithPast only")
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("attention_mask holds padding: this model reads whole rows; "
                             "generate or score rows of one length (or one row at a time)")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        view = None if not use_cache else _CacheView(cache)
        if view is not None and view.length > 0:
            x, memory = self._embed_step(input_ids, ngram_context)
        else:
            x, memory = self.model.embed(input_ids)
        logits = self.model.logits(self.model.hidden(x, view, memory=memory))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                   ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache if use_cache else None)

    def _embed_step(self, input_ids: torch.Tensor, ngram_context: torch.Tensor | None):
        embedding = self.model.embedding
        if input_ids.shape[1] != 1:
            raise ValueError("a step on a filled cache takes one new token per row")
        if embedding.context_size == 0:
            return self.model.embed_last(input_ids)
        if ngram_context is None or not torch.equal(ngram_context[:, -1:], input_ids):
            raise ValueError("a cached step of an n-gram model needs ngram_context: the row's last "
                             "tokens ending with the new one (generate passes it)")
        recent = ngram_context[:, -(embedding.context_size + 1):]
        missing = embedding.context_size + 1 - recent.shape[1]
        if missing > 0:  # a row shorter than the n-gram: what precedes its start reads as pad_id
            recent = F.pad(recent, (missing, 0), value=embedding.pad_id)
        return self.model.embed_last(recent)

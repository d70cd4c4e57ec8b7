"""A GPT-2 decoder that takes its input embedding as a part.

The embedding (``oe.models.embedding.TokenEmbedding`` or ``OverEncoding``) owns the 1-gram table; the
output head shares it. Attention is PyTorch's scaled_dot_product_attention: causal over the whole
row, or, for packed rows with document ids, causal inside each document (``oe.models.attention``)
with positions restarting at each document. Generation keeps a key/value cache, so each new token
costs one position of work.

An Over-Encoding embedding with inner ``layers`` gives, with each pass's input embeddings, the
memory of those layers (``embed``: a ``Memory``, one [B, T, W] tensor per block, row for row with
the input); ``hidden`` takes it as an argument and adds it to the residual stream before each of
those blocks (``OverEncoding.inject``), in training, evaluation and generation alike. Slicing a
batch's rows (micro-batches) slices the input and its memory together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from oe.models.attention import DocumentAttention, DocumentMask
from oe.models.compile import CountedCompile

# The n-gram memory an input embedding adds before inner blocks: block index -> [B, T, W].
Memory = dict[int, torch.Tensor]


def memory_rows(memory: Memory, rows: slice) -> Memory:
    """The memory of a batch's ``rows`` (a micro-batch), as the input's rows are taken."""
    return {layer: value[rows] for layer, value in memory.items()}


@dataclass
class BackboneConfig:
    """Shape of the transformer. Presets: ``gpt2_2m4`` and ``gpt2_85m`` (see ``PRESETS``)."""

    n_layer: int = 12
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 1024
    dropout: float = 0.0
    bias: bool = True
    tie_embeddings: bool = True
    # torch.compile the transformer blocks of training and validation passes (generation stays
    # eager); None: on for CUDA, off elsewhere.
    compile: bool | None = None


PRESETS: dict[str, BackboneConfig] = {
    "gpt2_2m4": BackboneConfig(n_layer=12, n_head=4, n_embd=128),
    "gpt2_85m": BackboneConfig(n_layer=12, n_head=12, n_embd=768),
    "gpt2_small": BackboneConfig(n_layer=12, n_head=12, n_embd=768),
}


def check_backbone(config: BackboneConfig) -> None:
    for name in ("n_layer", "n_head", "n_embd", "block_size"):
        if getattr(config, name) < 1:
            raise ValueError(f"model.backbone.{name} must be >= 1, got {getattr(config, name)}")
    if config.n_embd % config.n_head:
        raise ValueError(
            f"model.backbone.n_embd ({config.n_embd}) must be divisible by "
            f"model.backbone.n_head ({config.n_head})"
        )
    if config.compile not in (None, True, False):
        raise ValueError(f"model.backbone.compile must be true, false or null, got {config.compile!r}")
    if not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"model.backbone.dropout must be in [0, 1), got {config.dropout}")


class KVCache:
    """Keys and values of every layer for a batch, preallocated to ``capacity`` positions."""

    def __init__(self, n_layer: int, batch: int, n_head: int, capacity: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        shape = (n_layer, batch, n_head, capacity, head_dim)
        self.keys = torch.empty(shape, dtype=dtype, device=device)
        self.values = torch.empty(shape, dtype=dtype, device=device)
        self.length = 0

    def keep(self, rows: torch.Tensor) -> None:
        """Keep the cached positions of batch rows ``rows`` only (a batch whose other rows ended)."""
        kept = []
        for cached in (self.keys, self.values):
            smaller = cached.new_empty((cached.shape[0], len(rows), *cached.shape[2:]))
            smaller[:, :, :, :self.length] = cached[:, :, :, :self.length].index_select(1, rows)
            kept.append(smaller)
        self.keys, self.values = kept

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]
        self.keys[layer, :, :, self.length:end] = k
        self.values[layer, :, :, self.length:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.out = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0,
                documents: DocumentMask | None = None) -> torch.Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(x)
        dropout = self.dropout if self.training else 0.0
        if documents is not None:
            return self.out(documents.attend(qkv.view(batch, length, 3, self.n_head, -1), dropout))
        q, k, v = qkv.split(dim, dim=2)
        q, k, v = (t.view(batch, length, self.n_head, -1).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            k, v = cache.append(layer, k, v)
        # With a cache and one new query, every cached position is visible: no mask needed.
        causal = cache is None or length > 1
        if cache is not None and length > 1 and cache.length > 0:
            raise ValueError("a multi-token step is only supported on an empty cache")
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=dropout)
        return self.out(y.transpose(1, 2).reshape(batch, length, dim))


class MLP(nn.Module):
    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.up = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.down = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0,
                documents: DocumentMask | None = None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.ln_1(x), cache, layer, documents))
        return x + self.dropout(self.mlp(self.ln_2(x)))


def init_gpt2_blocks(blocks: nn.Module, n_layer: int) -> None:
    """GPT-2's initialisation of the transformer blocks in ``blocks``, in a stack of ``n_layer``.

    Matrices N(0, 0.02), biases zero, norms untouched; the residual projections (attention
    ``out``, MLP ``down``) get std 0.02 / sqrt(2 * n_layer), as each block adds two of them to
    the residual stream.
    """
    for name, p in blocks.named_parameters():
        if p.dim() == 2:
            residual = name.endswith(("out.weight", "down.weight"))
            nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layer) if residual else 0.02)
        elif name.endswith("bias"):
            nn.init.zeros_(p)


class GPT(nn.Module):
    """GPT-2 over a given input embedding module."""

    def __init__(self, config: BackboneConfig, embedding: nn.Module, vocab_size: int) -> None:
        super().__init__()
        check_backbone(config)
        outside = [layer for layer in getattr(embedding, "inner_layers", ())
                   if layer >= config.n_layer]
        if outside:
            raise ValueError(f"over_encoding.layers holds {outside}, outside the backbone's "
                             f"blocks 0..{config.n_layer - 1}")
        self.config = config
        self.vocab_size = vocab_size
        self.embedding = embedding
        # Blocks (other than 0) before which the embedding adds n-gram memory; usually none.
        self.inner_layers: tuple[int, ...] = tuple(getattr(embedding, "inner_layers", ()))
        self.position = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.head = None if config.tie_embeddings else nn.Linear(config.n_embd, vocab_size, bias=False)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.normal_(self.position.weight, std=0.02)
        init_gpt2_blocks(self.blocks, self.config.n_layer)
        if self.head is not None:
            nn.init.normal_(self.head.weight, std=0.02)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.embedding.token.weight if self.head is None else self.head.weight
        return F.linear(hidden, weight)

    # Which exact path attends inside documents (oe.models.attention); None: the device's default.
    document_attention: DocumentAttention | None = None

    def embed(self, tokens: torch.Tensor, doc_ids: torch.Tensor | None = None,
              ngram_rows: torch.Tensor | None = None) -> tuple[torch.Tensor, Memory]:
        """Input embeddings [B, T, D] of ``tokens`` [B, T] and the memory of inner blocks.

        ``ngram_rows``: the tables' rows of these tokens, looked up already (``HostTables``).
        """
        if self.inner_layers:
            return self.embedding.embed(tokens, doc_ids, ngram_rows)
        rows = {} if ngram_rows is None else {"slices": ngram_rows}
        return self.embedding(tokens, doc_ids, **rows), {}

    def embed_last(self, recent: torch.Tensor,
                   ngram_rows: torch.Tensor | None = None) -> tuple[torch.Tensor, Memory]:
        """Input embedding [B, 1, D] (and memory) of the newest token of ``recent`` [B, L]."""
        if self.inner_layers:
            return self.embedding.embed_last(recent, ngram_rows)
        rows = () if ngram_rows is None else (ngram_rows,)
        return self.embedding.forward_last(recent, *rows), {}

    def hidden(self, x: torch.Tensor, cache: KVCache | None = None,
               doc_ids: torch.Tensor | None = None,
               memory: Memory | None = None) -> torch.Tensor:
        """Final hidden states [B, T, D] of input embeddings ``x`` [B, T, D].

        With ``doc_ids`` [B, T] (packed rows), attention stays inside each document and positions
        restart at each document's first token; without, a row is one sequence. ``memory``: what
        ``embed`` gave with ``x`` (rows for rows), needed when the embedding has inner layers.
        """
        memory = {} if memory is None else memory
        if sorted(memory) != list(self.inner_layers):
            raise ValueError(f"the input embedding adds memory before blocks "
                             f"{list(self.inner_layers)}, but the pass was given memory for "
                             f"{sorted(memory)}: embed with GPT.embed and pass its memory")
        start = 0 if cache is None else cache.length
        length = x.shape[1]
        if doc_ids is not None and cache is not None:
            raise ValueError("document ids are for training passes; generation uses the cache")
        documents = None if doc_ids is None else DocumentMask(doc_ids, self.document_attention)
        if documents is None:
            positions = torch.arange(start, start + length, device=x.device)
            self._check_length(start + length)
        else:  # a packed row may be longer than block_size; its documents may not
            positions = documents.positions
            self._check_length(positions.max() + 1)
        x = self.drop(x + self.position(positions))
        if cache is None:
            x = self._run_blocks_maybe_compiled(x.device)(x, documents, memory)
        else:
            for layer, block in enumerate(self.blocks):
                if layer in memory:
                    x = self.embedding.inject(layer, x, memory[layer])
                x = block(x, cache, layer)
            cache.length += length
        return self.ln_f(x)

    def _check_length(self, longest: int | torch.Tensor) -> None:
        """Refuse a sequence longer than the position table; on a GPU without waiting for it."""
        message = "sequence of {} positions exceeds model.backbone.block_size ({})"
        if isinstance(longest, torch.Tensor) and longest.device.type == "cuda":
            torch._assert_async(longest <= self.config.block_size,
                                message.format("more", self.config.block_size))
        elif longest > self.config.block_size:
            raise ValueError(message.format(int(longest), self.config.block_size))

    def _run_blocks(self, x: torch.Tensor, documents: DocumentMask | None,
                    memory: Memory) -> torch.Tensor:
        for layer, block in enumerate(self.blocks):
            if layer in memory:
                x = self.embedding.inject(layer, x, memory[layer])
            x = block(x, documents=documents)
        return x

    def _run_blocks_maybe_compiled(self, device: torch.device):
        wanted = self.config.compile if self.config.compile is not None else device.type == "cuda"
        if not wanted:
            return self._run_blocks
        if self.__dict__.get("compiled_blocks") is None:
            # Kept out of the module's children and state: checkpoints look the same either way.
            self.__dict__["compiled_blocks"] = CountedCompile(self._run_blocks, "the transformer blocks")
        return self.__dict__["compiled_blocks"]

    def forward(self, tokens: torch.Tensor, doc_ids: torch.Tensor | None = None,
                isolate_documents: bool = False) -> torch.Tensor:
        """Logits [B, T, V] for token ids [B, T].

        ``doc_ids`` reset n-grams at document boundaries; with ``isolate_documents`` they also
        keep attention and positions inside each document (packed rows of separate documents).
        """
        x, memory = self.embed(tokens, doc_ids)
        return self.logits(self.hidden(x, doc_ids=doc_ids if isolate_documents else None,
                                       memory=memory))

    def new_cache(self, batch: int, capacity: int, device: torch.device) -> KVCache:
        c = self.config
        dtype = self.position.weight.dtype
        return KVCache(c.n_layer, batch, c.n_head, capacity, c.n_embd // c.n_head, dtype, device)

    def step(self, recent: torch.Tensor, cache: KVCache,
             ngram_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, V] of the token after the newest of ``recent`` [B, L], using the cache.

        ``ngram_rows``: the n-gram rows of that token, looked up already (tables in host memory,
        ``oe.models.embedding.HostTables``).
        """
        x, memory = self.embed_last(recent, ngram_rows)
        return self.logits(self.hidden(x, cache, memory=memory))[:, -1]

    def num_parameters(self, include_ngram_tables: bool = False) -> int:
        tables = set()
        if not include_ngram_tables and hasattr(self.embedding, "table_parameters"):
            tables = {id(p) for p in self.embedding.table_parameters()}
        return sum(p.numel() for p in self.parameters() if id(p) not in tables)

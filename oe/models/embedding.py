"""Input embeddings: the plain token embedding and Over-Encoding.

Both map token ids [B, T] (and optional document ids) to vectors [B, T, D], embed the newest
token of a generation step from the last few tokens alone, and expose the 1-gram table as
``token`` so that the output head can share it.

Over-Encoding (Huang et al., 2025) adds hashed n-gram tables:

    OE(x)_i = ( E_1[x_i] + sum_n sum_s P_{n,s} E_{n,s}[ g_n(i) mod m_{n,s} ] ) / (1 + k |orders|)

Every order n has k slices of width D / (k |orders|), each with its own modulus m, m+2, m+4,
... (distinct over the whole model). The slices together are exactly D wide, so the sum of the
per-slice projections is one D x D linear map of their concatenation; with projections off,
each slice keeps its own block of coordinates.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn
from torchrec import EmbeddingCollection, EmbeddingConfig, KeyedJaggedTensor

from oe.models.ngram import last_ngram_ids, ngram_ids

log = logging.getLogger(__name__)


@dataclass
class OverEncodingConfig:
    """Over-Encoding options. ``orders`` lists the n-gram orders beside the 1-gram (each >= 2)."""

    orders: list[int] = field(default_factory=lambda: [2, 3])
    k: int = 1
    modulus: int = 12_800_001
    project: bool = True
    init_std: float = 0.02
    combine: Literal["mean", "sum"] = "mean"
    # The tables' optimiser. Sharded tables: rowwise_adagrad (None), adagrad, sgd, or adam (GPU
    # only), fused into the backward pass (oe.distributed.parallelize). Plain tables: adamw (None,
    # with the dense betas) or sgd. Either way the rate is table_lr (None: the dense lr) times the
    # dense schedule's warm-up and cosine factor at every step.
    table_optimizer: Literal["adamw", "rowwise_adagrad", "adagrad", "sgd", "adam"] | None = None
    table_lr: float | None = None
    table_weight_decay: float = 0.0
    # False: the tables stay ordinary parameters, updated on every row they hold every step. Only
    # sensible for small tables (cfg3f's exact ones), or where TorchRec's fused kernels are not
    # installed.
    shard_tables: bool = True


_DEFER_TABLES: contextvars.ContextVar[bool] = contextvars.ContextVar("defer_tables", default=False)


@contextlib.contextmanager
def deferred_ngram_tables() -> Iterator[None]:
    """Build sharded n-gram tables without values (meta device) inside this block.

    Training (``oe.cli.fit``) shards the tables right away, and ``oe.distributed.parallelize`` then draws each
    rank's own rows from the same keyed generator, so no process ever holds a whole table and
    the values equal those of an eagerly built model.
    """
    token = _DEFER_TABLES.set(True)
    try:
        yield
    finally:
        _DEFER_TABLES.reset(token)


ROW_BLOCK = 1 << 16  # rows drawn from one generator; fixed, so values do not depend on the split


def table_rows(seed: int, table: int, start: int, stop: int, width: int, std: float,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """Initial values of rows ``start .. stop-1`` of table number ``table``: N(0, std^2).

    Each block of ROW_BLOCK rows has its own generator, seeded from (seed, table, block), so any
    range of rows can be drawn alone and agrees with the same rows drawn as part of the table.
    Written into ``out`` [stop - start, width] when given (no second copy of a large table).
    """
    out = torch.empty(stop - start, width) if out is None else out
    if std == 0:
        return out.zero_()
    for block in range(start // ROW_BLOCK, math.ceil(stop / ROW_BLOCK)):
        first, last = block * ROW_BLOCK, (block + 1) * ROW_BLOCK
        generator = torch.Generator().manual_seed(
            (seed * 0x9E3779B97F4A7C15 + table * 0xBF58476D1CE4E5B9 + block) % (1 << 63)
        )
        values = torch.randn(ROW_BLOCK, width, generator=generator)
        lo, hi = max(first, start), min(last, stop)
        out[lo - start : hi - start] = values[lo - first : hi - first] * std
    return out


class TokenEmbedding(nn.Module):
    """The baseline: one row per token id."""

    context_size = 0  # tokens before the newest that a generation step needs

    def __init__(self, vocab_size: int, dim: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab_size, dim)
        nn.init.normal_(self.token.weight, std=init_std)

    def forward(self, tokens: torch.Tensor, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.token(tokens)

    def forward_last(self, recent: torch.Tensor) -> torch.Tensor:
        return self.token(recent[:, -1:])


@dataclass(frozen=True)
class NgramTable:
    name: str
    order: int
    slice: int
    modulus: int
    width: int


def plan_tables(
    config: OverEncodingConfig, vocab_size: int, dim: int
) -> list[NgramTable]:
    """The n-gram tables of a model, or a ValueError naming the offending field."""
    if config.k < 1:
        raise ValueError(f"over_encoding.k must be >= 1, got {config.k}")
    if config.modulus < 1:
        raise ValueError(f"over_encoding.modulus must be >= 1, got {config.modulus}")
    if not config.orders:
        raise ValueError("over_encoding.orders must list at least one n-gram order (>= 2)")
    for order in config.orders:
        if order < 2:
            raise ValueError(
                f"over_encoding.orders holds {order}: n-gram orders must be >= 2 "
                "(the 1-gram embedding is always present)"
            )
    if len(set(config.orders)) != len(config.orders):
        raise ValueError(f"over_encoding.orders repeats an order: {config.orders}")
    n_slices = config.k * len(config.orders)
    if dim % n_slices:
        raise ValueError(
            f"model width {dim} is not divisible by over_encoding.k * len(over_encoding.orders)"
            f" = {config.k} * {len(config.orders)}; choose k so that the slice width is whole"
        )
    width = dim // n_slices
    tables = []
    for i, (order, s) in enumerate(
        (order, s) for order in sorted(config.orders) for s in range(config.k)
    ):
        modulus = config.modulus + 2 * i
        if modulus % vocab_size == 0:
            raise ValueError(
                f"over_encoding.modulus: table {i} (order {order}, slice {s}) would use modulus "
                f"{modulus}, a multiple of the vocabulary size {vocab_size}; pick m so that "
                f"m, m+2, ..., m+{2 * (n_slices - 1)} are not multiples of {vocab_size}"
            )
        tables.append(NgramTable(f"ngram{order}_{s}", order, s, modulus, width))
    return tables


class OverEncoding(nn.Module):
    """The 1-gram embedding widened with hashed n-gram tables (one TorchRec collection)."""

    def __init__(
        self, vocab_size: int, dim: int, config: OverEncodingConfig, pad_id: int = 0
    ) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.tables = plan_tables(config, vocab_size, dim)
        self.context_size = max(config.orders) - 1
        self.token = nn.Embedding(vocab_size, dim)
        # TorchRec's own initial values are overwritten below; building them must not use the
        # global generator, so that a model is the same whether its tables are deferred or not.
        with torch.random.fork_rng(devices=[]):
            self.ngram = self._collection(config)
        self.projection = nn.Linear(dim, dim, bias=False) if config.project else None
        # Keys the tables' initial values (with table and row block), so they do not depend on
        # how the rows are later split over ranks; drawn from torch's seeded generator.
        self.table_seed = int(torch.randint(0, 2**62, (), device="cpu"))
        self.keep_slices = False
        self.last_slices: torch.Tensor | None = None
        n_terms = 1 + len(self.tables)
        self.scale = 1.0 / n_terms if config.combine == "mean" else 1.0
        nn.init.normal_(self.token.weight, std=0.02)
        if self.projection is not None:
            nn.init.normal_(self.projection.weight, std=0.02)
        self.reset_ngram_tables()
        for t in self.tables:
            exact = vocab_size**t.order <= t.modulus
            log.info(
                "n-gram table %s: %d rows x %d, %s",
                t.name,
                t.modulus,
                t.width,
                "exact (V^n <= m, no collisions)" if exact else "hashed (collisions possible)",
            )

    def _collection(self, config: OverEncodingConfig) -> EmbeddingCollection:
        return EmbeddingCollection(
            tables=[
                EmbeddingConfig(
                    name=t.name,
                    embedding_dim=t.width,
                    num_embeddings=t.modulus,
                    feature_names=[t.name],
                )
                for t in self.tables
            ],
            # The current default device, so that `with torch.device("meta")` builds a model of
            # any table size without memory (oe.analysis.memory_plan); TorchRec would otherwise force the CPU.
            device=(torch.device("meta") if _DEFER_TABLES.get() and config.shard_tables
                    else torch.get_default_device()),
        )

    def table_parameters(self) -> list[nn.Parameter]:
        return list(self.ngram.parameters())

    @torch.no_grad()
    def reset_ngram_tables(self) -> None:
        for index, t in enumerate(self.tables):
            weight = self.ngram.embeddings[t.name].weight
            if weight.is_meta:  # no values yet; oe.distributed.parallelize draws each rank's own rows
                continue
            table_rows(self.table_seed, index, 0, t.modulus, t.width, self.config.init_std,
                       out=weight)

    def _ngram_vectors(self, ids: list[torch.Tensor]) -> torch.Tensor:
        """Sum of the projected n-gram slices, from one id tensor [B, T] per table."""
        batch, length = ids[0].shape
        features = KeyedJaggedTensor.from_lengths_sync(
            keys=[t.name for t in self.tables],
            values=torch.cat([i.flatten() for i in ids]),
            lengths=torch.full(
                (len(self.tables) * batch,), length, dtype=torch.int32, device=ids[0].device
            ),
        )
        looked_up = self.ngram(features)
        slices = torch.cat([looked_up[t.name].values() for t in self.tables], dim=-1)
        slices = slices.view(batch, length, -1)
        if self.keep_slices:  # for callbacks.ngram_stats, which reads them after the step
            self.last_slices = slices.detach()
        return self.projection(slices) if self.projection is not None else slices

    def forward(self, tokens: torch.Tensor, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        ids = [
            ngram_ids(tokens, t.order, self.vocab_size, t.modulus, self.pad_id, doc_ids)
            for t in self.tables
        ]
        return (self.token(tokens) + self._ngram_vectors(ids)) * self.scale

    def forward_last(self, recent: torch.Tensor) -> torch.Tensor:
        """Embedding [B, 1, D] of the newest token of ``recent``, from its last few tokens."""
        ids = [
            last_ngram_ids(recent, t.order, self.vocab_size, t.modulus, self.pad_id)[:, None]
            for t in self.tables
        ]
        return (self.token(recent[:, -1:]) + self._ngram_vectors(ids)) * self.scale

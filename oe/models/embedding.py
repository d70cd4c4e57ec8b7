"""Input embeddings: the plain token embedding and Over-Encoding.

Both map token ids [B, T] (and optional document ids) to vectors [B, T, D], embed the newest
token of a generation step from the last few tokens alone, and expose the 1-gram table as
``token`` so that the output head can share it.

Over-Encoding (Huang et al., 2025) adds hashed n-gram tables:

    OE(x)_i = ( E_1[x_i] + sum_n sum_s P_{n,s} E_{n,s}[ h_{n,s}(i) ] ) / (1 + k |orders|)

Every order n has k heads (slices) of width D / (k |orders|), each its own table and hash
h_{n,s} (``oe.models.ngram``: the paper's polynomial with moduli m, m+2, m+4, ..., or Engram's
multiply-XOR with prime moduli; distinct over the whole model). The slices together are exactly
D wide, so the sum of the per-slice projections is one D x D linear map of their concatenation;
with projections off, each slice keeps its own block of coordinates.

Beyond the paper, modelled on DeepSeek's Engram: ``gate`` scales each retrieved slice by
sigmoid(<rmsnorm(h), rmsnorm(K_s e_s)> / sqrt(D)), h the hidden state where the memory enters
(the 1-gram embedding at the input); ``layers`` adds the memory to the residual stream before
any of the backbone's blocks (layer 0: the input, as above; an inner layer l adds
P_l(slices) / (1 + k |orders|) before block l), with one set of tables shared by all of them or
one set per layer. The defaults (polynomial, no gate, layers [0]) are the paper's model.
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
import torch.nn.functional as F
from torch import nn
from torchrec import EmbeddingCollection, EmbeddingConfig, KeyedJaggedTensor

from oe.models.ngram import (NgramHash, hashed_ids, last_hashed_ids, last_ngram_signs,
                             ngram_signs, primes_from, sign_key, xor_multipliers)

log = logging.getLogger(__name__)


@dataclass
class OverEncodingConfig:
    """Over-Encoding options. ``orders`` lists the n-gram orders beside the 1-gram (each >= 2)."""

    orders: list[int] = field(default_factory=lambda: [2, 3])
    k: int = 1
    modulus: int = 12_800_001
    project: bool = True
    init_std: float = 0.02
    # The tables' initial rows: normal (N(0, init_std^2), the paper's), zero (modded-nanogpt's:
    # the model starts as the 1-gram model), or token_mean (row r: the mean of the token
    # embeddings of the n-gram whose polynomial id is r, the table's own columns of them; exact
    # tables give every n-gram its own tokens' mean).
    table_init: Literal["normal", "zero", "token_mean"] = "normal"
    # How the 1-gram embedding e and the n-gram memory o (sum of the projected slices) combine:
    # mean (the paper): (e + o) / (1 + k |orders|); sum: e + o; rmsnorm_sum (Marin's fusion):
    # (RMSNorm(e) + RMSNorm(o)) / sqrt(2), each RMSNorm with its own gain (starting at 1).
    combine: Literal["mean", "sum", "rmsnorm_sum"] = "mean"
    # A factor on o before it is combined: a number, or sqrt_d for sqrt(model width) (LongCat's
    # up-scaling of the n-gram output). 1 is the paper's model.
    ngram_scale: float | Literal["sqrt_d"] = 1.0
    # The sign trick (modded-nanogpt): each looked-up row times a fixed +1 or -1 of its n-gram and
    # table (a second hash of the exact n-gram, oe.models.ngram.ngram_signs), so that n-grams
    # sharing a row pull it in independent directions.
    signed: bool = False
    # The tables' optimiser. Sharded tables: rowwise_adagrad (None), adagrad, sgd, or adam (GPU
    # only), fused into the backward pass (oe.distributed.parallelize). Plain tables: adamw (None,
    # with the dense betas) or sgd. Either way the rate is table_lr (None: the dense lr) times the
    # dense schedule's warm-up and cosine factor at every step.
    table_optimizer: Literal["adamw", "rowwise_adagrad", "adagrad", "sgd", "adam"] | None = None
    table_lr: float | None = None
    table_weight_decay: float = 0.0
    # The tables' rate as a multiple of the dense lr (Megatron's Engram recipe: 5); set it or
    # table_lr, not both.
    table_lr_multiplier: float | None = None
    # The tables' Adam betas (None: the dense optimizer.betas), e.g. [0.75, 0.95] as
    # modded-nanogpt trains its bigram table; adamw (plain) and adam (sharded) only.
    table_betas: tuple[float, float] | None = None
    # False: the tables stay ordinary parameters, updated on every row they hold every step. Only
    # sensible for small tables (cfg3f's exact ones), or where TorchRec's fused kernels are not
    # installed.
    shard_tables: bool = True
    # How n-grams map to rows (oe.models.ngram): polynomial (the paper's exact modular ids) or
    # multiply_xor (Engram's: odd multipliers per head, XOR over the window, prime moduli).
    hash: Literal["polynomial", "multiply_xor"] = "polynomial"
    # Hashes (tables) per order. The paper's k is the same number: null reads k; set one of them.
    heads: int | None = None
    # Scale each retrieved slice by a sigmoid gate of the hidden state where the memory enters.
    gate: bool = False
    # Blocks before which the memory enters the residual stream; 0 is the input embedding.
    layers: list[int] = field(default_factory=lambda: [0])
    # With several layers: one set of tables per layer (true) or one set read by all (false).
    per_layer_tables: bool = False

    @property
    def num_heads(self) -> int:
        return self.k if self.heads is None else self.heads


COMBINES = ("mean", "sum", "rmsnorm_sum")
TABLE_INITS = ("normal", "zero", "token_mean")


def ngram_factor(config: OverEncodingConfig, dim: int) -> float:
    """The factor ``ngram_scale`` puts on the memory of a model of width ``dim``."""
    return math.sqrt(dim) if config.ngram_scale == "sqrt_d" else float(config.ngram_scale)


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


def token_mean_rows(token_weight: torch.Tensor, order: int, vocab_size: int, start: int,
                    stop: int, out: torch.Tensor) -> torch.Tensor:
    """Rows ``start .. stop-1`` of an order-``order`` table: row r is the mean of the rows of
    ``token_weight`` [V, w] at the digits of r in base V (the n-gram whose polynomial id is r);
    rows r >= V^order hold no n-gram and are zero. Written into ``out``, a block at a time."""
    weight = token_weight.detach().to(device=out.device, dtype=out.dtype)
    for first in range(start, stop, ROW_BLOCK):
        last = min(stop, first + ROW_BLOCK)
        rest = torch.arange(first, last, device=out.device)
        total = torch.zeros(last - first, weight.shape[1], device=out.device, dtype=out.dtype)
        for _ in range(order):
            total += weight[rest % vocab_size]
            rest = rest // vocab_size
        out[first - start : last - start] = (total / order).masked_fill((rest > 0)[:, None], 0.0)
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
    slice: int  # the head: which of the order's hashes
    modulus: int
    width: int
    hash: NgramHash
    layer: int  # the injection layer it serves (with shared tables: the first of them)


def plan_tables(
    config: OverEncodingConfig, vocab_size: int, dim: int
) -> list[NgramTable]:
    """The n-gram tables of a model of width ``dim`` whose settings ``ModelConfig`` checked
    (``oe.models.config``); a ValueError naming ``model.over_encoding.modulus`` when a table's
    modulus is a multiple of the vocabulary (a check that needs the vocabulary).

    Tables of the first injection layer are named ``ngram{order}_{head}`` whatever that layer;
    per-layer sets after it ``layer{l}_ngram{order}_{head}``. Table i has modulus m + 2i
    (polynomial) or the i-th prime >= m (multiply_xor), and its own multipliers.
    """
    heads = config.num_heads
    width = dim // (heads * len(config.orders))
    table_layers = config.layers if config.per_layer_tables else config.layers[:1]
    slots = [(layer, order, s) for layer in table_layers
             for order in sorted(config.orders) for s in range(heads)]
    primes = primes_from(config.modulus, len(slots)) if config.hash == "multiply_xor" else []
    tables = []
    for i, (layer, order, s) in enumerate(slots):
        if config.hash == "multiply_xor":
            modulus = primes[i]
            spec = NgramHash("multiply_xor", order, modulus, xor_multipliers(order, i))
        else:
            modulus = config.modulus + 2 * i
            if modulus % vocab_size == 0:
                moduli = ", ".join(["m"] + [f"m+{2 * j}" for j in range(1, len(slots))])
                if len(slots) > 4:
                    moduli = f"m, m+2, ..., m+{2 * (len(slots) - 1)}"
                raise ValueError(
                    f"model.over_encoding.modulus: table {i} (order {order}, slice {s}) would use "
                    f"modulus {modulus}, a multiple of the vocabulary size {vocab_size}; pick m "
                    f"so that none of {moduli} is a multiple of {vocab_size}"
                )
            spec = NgramHash("polynomial", order, modulus)
        prefix = "" if layer == table_layers[0] else f"layer{layer}_"
        tables.append(NgramTable(f"{prefix}ngram{order}_{s}", order, s, modulus, width, spec,
                                 layer))
    return tables


NEAR_MULTIPLE = 0.01  # a table size within this share of V of a multiple of V is warned about


def table_size_warnings(tables: list[NgramTable], vocab_size: int) -> list[str]:
    """One line per table whose size lies within 1% of V of an integer multiple of the
    vocabulary V (LongCat-Flash's advice: keep table sizes away from them). Under the polynomial
    hash with m = kV + d, the 2-grams (a, b) and (a + k, b + d) share a row (their ids differ by
    exactly m): collisions fall on neighbouring token ids in a fixed pattern, not at random."""
    lines = []
    for t in tables:
        multiple = round(t.modulus / vocab_size)
        offset = t.modulus - multiple * vocab_size
        if multiple >= 1 and abs(offset) <= NEAR_MULTIPLE * vocab_size:
            lines.append(
                f"n-gram table {t.name} (order {t.order}): {t.modulus:,} rows = {multiple} x "
                f"{vocab_size:,} {'+' if offset >= 0 else '-'} {abs(offset)}, within 1% of the "
                f"vocabulary size of a multiple of it; choose over_encoding.modulus away from "
                f"multiples of V (e.g. {multiple * vocab_size + vocab_size // 2 + 1:,})")
    return lines


class MemoryGate(nn.Module):
    """Engram's gate: each slice e_s scaled by sigmoid(<rmsnorm(h), rmsnorm(K_s e_s)> / sqrt(D)).

    ``h`` is the hidden state where the memory enters, so what a table retrieves counts only
    where it agrees with the context; K_s maps the slice to the model width.
    """

    def __init__(self, widths: list[int], dim: int) -> None:
        super().__init__()
        self.widths = widths
        self.keys = nn.ModuleList(nn.Linear(w, dim, bias=False) for w in widths)
        for key in self.keys:
            nn.init.normal_(key.weight, std=0.02)

    def forward(self, hidden: torch.Tensor, slices: torch.Tensor) -> torch.Tensor:
        dim = hidden.shape[-1]
        query = F.rms_norm(hidden, (dim,))
        gated = []
        for key, part in zip(self.keys, slices.split(self.widths, dim=-1)):
            score = (query * F.rms_norm(key(part), (dim,))).sum(-1, keepdim=True) / math.sqrt(dim)
            gated.append(part * torch.sigmoid(score))
        return torch.cat(gated, dim=-1)


class OverEncoding(nn.Module):
    """The 1-gram embedding widened with hashed n-gram tables (one TorchRec collection).

    With inner ``layers``, ``embed`` returns with the input embeddings the slices of those layers
    (their memory, row for row with the input), which the backbone adds before their blocks
    (``inject``).
    """

    def __init__(
        self, vocab_size: int, dim: int, config: OverEncodingConfig, pad_id: int = 0
    ) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.tables = plan_tables(config, vocab_size, dim)
        self.context_size = max(config.orders) - 1
        self.layers = list(config.layers)
        self.inner_layers = [layer for layer in self.layers if layer != 0]
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
        n_terms = 1 + len(self.tables_of(self.layers[0]))
        self.scale = {"mean": 1.0 / n_terms, "sum": 1.0, "rmsnorm_sum": 1.0 / math.sqrt(2)}[
            config.combine]
        self.ngram_factor = ngram_factor(config, dim)
        self.sign_keys = [sign_key(i) for i in range(len(self.tables))] if config.signed else []
        nn.init.normal_(self.token.weight, std=0.02)
        if self.projection is not None:
            nn.init.normal_(self.projection.weight, std=0.02)
        # Parts beyond the paper's model are made last, so that without them the model draws
        # exactly the paper model's initial values.
        self.layer_projections = nn.ModuleDict()
        if config.project:
            for layer in self.layers[1:]:
                self.layer_projections[str(layer)] = nn.Linear(dim, dim, bias=False)
                nn.init.normal_(self.layer_projections[str(layer)].weight, std=0.02)
        self.gates = nn.ModuleDict(
            {str(layer): MemoryGate([t.width for t in self.tables_of(layer)], dim)
             for layer in self.layers} if config.gate else {}
        )
        # combine rmsnorm_sum: one RMSNorm for the token embedding, one for the memory.
        self.norms = nn.ModuleDict(
            {"token": nn.RMSNorm(dim, eps=1e-6), "memory": nn.RMSNorm(dim, eps=1e-6)}
            if config.combine == "rmsnorm_sum" else {}
        )
        self.reset_ngram_tables()
        for t in self.tables:
            exact = t.hash.family == "polynomial" and vocab_size**t.order <= t.modulus
            log.info(
                "n-gram table %s: %d rows x %d, %s hash, %s",
                t.name,
                t.modulus,
                t.width,
                t.hash.family,
                "exact (V^n <= m, no collisions)" if exact else "hashed (collisions possible)",
            )
        for line in table_size_warnings(self.tables, vocab_size):
            log.warning(line)

    def tables_of(self, layer: int) -> list[NgramTable]:
        """The tables whose slices enter before block ``layer``."""
        if not self.config.per_layer_tables:
            return self.tables
        return [t for t in self.tables if t.layer == layer]

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
        return [] if self.ngram is None else list(self.ngram.parameters())

    @torch.no_grad()
    def reset_ngram_tables(self) -> None:
        for index, t in enumerate(self.tables):
            weight = self.ngram.embeddings[t.name].weight
            if weight.is_meta:  # no values yet; oe.distributed.parallelize draws each rank's own rows
                continue
            self.initial_rows(index, 0, t.modulus, weight)

    @torch.no_grad()
    def initial_rows(self, index: int, start: int, stop: int, out: torch.Tensor) -> torch.Tensor:
        """Initial values (``table_init``) of rows ``start .. stop-1`` of table number ``index``,
        written into ``out``; any range agrees with the same rows of the whole table."""
        t = self.tables[index]
        if self.config.table_init == "zero":
            return out.zero_()
        if self.config.table_init == "token_mean":
            first = [x.name for x in self.tables_of(t.layer)].index(t.name) * t.width
            return token_mean_rows(self.token.weight[:, first : first + t.width], t.order,
                                   self.vocab_size, start, stop, out)
        return table_rows(self.table_seed, index, start, stop, t.width, self.config.init_std,
                          out=out)

    def ngram_ids(self, tokens: torch.Tensor, doc_ids: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Row ids [B, T] of every table, for the n-grams ending at each position of ``tokens``."""
        return [hashed_ids(tokens, t.hash, self.vocab_size, self.pad_id, doc_ids) for t in self.tables]

    def last_ngram_ids(self, recent: torch.Tensor) -> list[torch.Tensor]:
        """Row ids [B, 1] of every table for the newest token of ``recent`` [B, L]."""
        return [last_hashed_ids(recent, t.hash, self.vocab_size, self.pad_id)[:, None]
                for t in self.tables]

    def _lookup(self, ids: list[torch.Tensor]) -> torch.Tensor:
        """The tables' rows, concatenated in table order: [B, T, sum of widths]."""
        if self.ngram is None:
            raise RuntimeError("the n-gram tables are in host memory (HostTables): pass the rows "
                               "it gathers")
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
        return slices.view(batch, length, -1)

    def _signed(self, slices: torch.Tensor, tokens: torch.Tensor,
                doc_ids: torch.Tensor | None = None, last: bool = False) -> torch.Tensor:
        """``slices`` with each table's rows times the sign of their n-gram (``signed``); with
        ``last``, of the newest token of ``tokens`` [B, L] only."""
        if not self.sign_keys:
            return slices
        signs = []
        for t, key in zip(self.tables, self.sign_keys):
            if last:
                sign = last_ngram_signs(tokens, t.order, self.vocab_size, key, self.pad_id)[:, None]
            else:
                sign = ngram_signs(tokens, t.order, self.vocab_size, key, self.pad_id, doc_ids)
            signs.append(sign.unsqueeze(-1).expand(*sign.shape, t.width))
        return slices * torch.cat(signs, dim=-1).to(slices.dtype)

    def _memory(self, layer: int, hidden: torch.Tensor, slices: torch.Tensor) -> torch.Tensor:
        """The projected (and gated) memory [B, T, D] entering before block ``layer``."""
        if self.gates:
            slices = self.gates[str(layer)](hidden, slices)
        projection = self.projection if layer == self.layers[0] else (
            self.layer_projections[str(layer)] if self.layer_projections else None)
        memory = projection(slices) if projection is not None else slices
        return memory if self.ngram_factor == 1.0 else memory * self.ngram_factor

    def _layer_slices(self, slices: torch.Tensor) -> dict[int, torch.Tensor]:
        """Each injection layer's part of the looked-up slices (all of them, when shared)."""
        if not self.config.per_layer_tables:
            return {layer: slices for layer in self.layers}
        width = slices.shape[-1] // len(self.layers)
        return {layer: slices[..., i * width : (i + 1) * width] for i, layer in enumerate(self.layers)}

    def _embed(self, tokens: torch.Tensor,
               slices: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        if self.keep_slices:  # for callbacks.ngram_stats, which reads them after the step
            self.last_slices = slices.detach()
        per_layer = self._layer_slices(slices)
        token = self.token(tokens)
        inner = {layer: per_layer[layer] for layer in self.inner_layers}
        if 0 not in per_layer:
            return token, inner  # the memory enters later; the input is the plain token embedding
        memory = self._memory(0, token, per_layer[0])
        if self.norms:
            return (self.norms["token"](token) + self.norms["memory"](memory)) * self.scale, inner
        return (token + memory) * self.scale, inner

    def embed(self, tokens: torch.Tensor, doc_ids: torch.Tensor | None = None,
              slices: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Input embeddings [B, T, D] and the inner layers' memory {block: [B, T, W]};
        ``slices`` [B, T, W]: the tables' rows, looked up already (``HostTables``), else read here."""
        if slices is None:
            slices = self._lookup(self.ngram_ids(tokens, doc_ids))
        return self._embed(tokens, self._signed(slices, tokens, doc_ids))

    def embed_last(self, recent: torch.Tensor, slices: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """``embed`` of the newest token of ``recent`` [B, L], from its last few tokens."""
        if slices is None:
            slices = self._lookup(self.last_ngram_ids(recent))
        return self._embed(recent[:, -1:], self._signed(slices, recent, last=True))

    def forward(self, tokens: torch.Tensor, doc_ids: torch.Tensor | None = None,
                slices: torch.Tensor | None = None) -> torch.Tensor:
        """Input embeddings [B, T, D] (``embed`` without the inner layers' memory)."""
        return self.embed(tokens, doc_ids, slices)[0]

    def forward_last(self, recent: torch.Tensor, slices: torch.Tensor | None = None) -> torch.Tensor:
        """Input embedding [B, 1, D] of the newest token of ``recent``."""
        return self.embed_last(recent, slices)[0]

    def inject(self, layer: int, hidden: torch.Tensor, slices: torch.Tensor) -> torch.Tensor:
        """The residual stream ``hidden`` with the memory of ``layer`` added."""
        return hidden + self._memory(layer, hidden, slices) * self.scale


class HostTables:
    """An Over-Encoding model's n-gram tables moved to host memory, for decoding.

    Takes the tables out of ``embedding`` (its collection becomes None, so that nothing reads
    them on the device by mistake) and keeps them on the host, pinned when ``device`` is a GPU.
    Each step gathers only the rows of the newest n-grams (one per table and row of the batch)
    and moves them to ``device``, from a pinned buffer without blocking the host.
    """

    def __init__(self, embedding: OverEncoding, device: torch.device | str) -> None:
        if embedding.ngram is None:
            raise ValueError("the embedding's n-gram tables are in host memory already")
        self.embedding = embedding
        self.device = torch.device(device)
        self.pin = self.device.type == "cuda"
        self.weights = []
        for t in embedding.tables:
            weight = embedding.ngram.embeddings[t.name].weight.detach().to("cpu")
            self.weights.append(weight.pin_memory() if self.pin else weight)
        embedding.ngram = None

    def _gather(self, ids: list[torch.Tensor]) -> torch.Tensor:
        rows = torch.cat([F.embedding(i, w) for i, w in zip(ids, self.weights)], dim=-1)
        if self.pin:
            rows = rows.pin_memory()
        return rows.to(self.device, non_blocking=self.pin)

    @torch.no_grad()
    def rows(self, tokens: torch.Tensor) -> torch.Tensor:
        """Slices [B, T, W] on the device of the n-grams ending at each position of ``tokens``."""
        return self._gather(self.embedding.ngram_ids(tokens.cpu()))

    @torch.no_grad()
    def last_rows(self, recent: torch.Tensor) -> torch.Tensor:
        """Slices [B, 1, W] on the device for the newest token of ``recent`` [B, L]."""
        return self._gather(self.embedding.last_ngram_ids(recent.cpu()))

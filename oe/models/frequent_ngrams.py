"""The "frequent n-gram" embedding: mined n-grams, each with a row of its own.

``oe mine`` writes the most frequent n-grams of a corpus. The top ``top_k`` of each
order get one row each, initialised to the mean of their tokens' (1-gram) embeddings. At every
position where one of them ends, its row is added to the 1-gram embedding:

    E(x)_i = E_1[x_i] + sum_{n in orders} [ (x_{i-n+1..i}) is kept ] * R[(x_{i-n+1..i})]

Unlike hashed Over-Encoding there are no collisions: a lookup hashes the window (with the same
``ngram_ids`` as everywhere, into a 40-bit range) to find a candidate row, then compares the
candidate's tokens with the window, so only the exact n-gram matches. Windows that reach back
across a document boundary read ``pad_id`` there, as for Over-Encoding.

The rows live in one TorchRec EmbeddingCollection (``self.ngram``, table ``frequent``), whose
last row is a never-read "no n-gram" row that misses are pointed at (and masked). Unlike the
hashed tables they are never sharded: every rank holds all of them, DDP averages their gradients
as any dense parameter's, and they train in the dense AdamW, in a parameter group of their own
(``table_lr``, ``table_weight_decay``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torchrec import EmbeddingCollection, EmbeddingConfig, KeyedJaggedTensor

from oe.models.ngram import KEY_MODULUS, ngram_ids, ngram_windows


@dataclass
class FrequentNgramConfig:
    """Rows for mined n-grams (a file written by ``oe mine``).

    Args:
        path: the mined JSONL file.
        orders: n-gram orders that get rows (each >= 2, all present in the file).
        top_k: rows per order: the ``top_k`` most frequent n-grams of that order.
        init: ``mean`` (mean of the tokens' embeddings) or ``zero`` (step 0 equals the backbone).
        table_lr: learning rate of the rows (None: the dense one).
        table_weight_decay: weight decay of the rows.
    """

    path: str = "mined.jsonl"
    orders: list[int] = field(default_factory=lambda: [2, 3])
    top_k: int = 1000
    init: Literal["mean", "zero"] = "mean"
    table_lr: float | None = None
    table_weight_decay: float = 0.0


def read_mined(path: str | Path, orders: list[int], top_k: int, vocab_size: int) -> dict[int, torch.Tensor]:
    """The ``top_k`` most frequent n-grams [top_k, n] of each order in ``orders`` from ``path``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mined n-gram file {path} not found; write it with `oe mine`")
    found: dict[int, list[list[int]]] = {n: [] for n in orders}
    with path.open() as f:
        header = json.loads(f.readline() or "{}")
        if "meta" not in header:
            raise ValueError(f"{path}:1: expected a header line {{\"meta\": ...}} as oe.analysis.mining writes")
        meta = header["meta"]
        if meta.get("vocab_size") != vocab_size:
            raise ValueError(
                f"{path}: mined with a tokenizer of {meta.get('vocab_size')} ids, but the model has "
                f"vocab_size {vocab_size}; mine again with the model's tokenizer"
            )
        for line_no, line in enumerate(f, start=2):
            try:
                row = json.loads(line)
                order, tokens = int(row["order"]), [int(t) for t in row["tokens"]]
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{line_no}: malformed row ({err}); expected "
                                 "{\"order\": n, \"tokens\": [n ids], \"count\": c}") from err
            if len(tokens) != order or not all(0 <= t < vocab_size for t in tokens):
                raise ValueError(f"{path}:{line_no}: {order}-gram {tokens} must hold {order} "
                                 f"token ids in 0..{vocab_size - 1}")
            if order in found and len(found[order]) < top_k:
                found[order].append(tokens)
    for n, rows in found.items():
        if len(rows) < top_k:
            raise ValueError(f"{path} holds {len(rows)} {n}-grams, fewer than top_k={top_k}; "
                             "lower frequent_ngrams.top_k or mine with a larger --top_k")
    return {n: torch.tensor(rows, dtype=torch.long).view(-1, n) for n, rows in found.items()}


class FrequentNgramEmbedding(nn.Module):
    """The 1-gram embedding plus one row per mined frequent n-gram."""

    def __init__(self, vocab_size: int, dim: int, config: FrequentNgramConfig, pad_id: int = 0) -> None:
        super().__init__()  # ``config`` checked by ModelConfig (oe.models.config)
        self.config = config
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.orders = sorted(config.orders)
        self.context_size = max(self.orders) - 1
        self.token = nn.Embedding(vocab_size, dim)
        nn.init.normal_(self.token.weight, std=0.02)
        mined = read_mined(config.path, self.orders, config.top_k, vocab_size)
        self.num_rows = config.top_k * len(self.orders)
        for i, n in enumerate(self.orders):
            keys = ngram_ids(mined[n], n, vocab_size, KEY_MODULUS, pad_id)[:, -1]
            sorted_keys, perm = keys.sort()
            if bool((sorted_keys[1:] == sorted_keys[:-1]).any()):
                # Only possible for a file listing an n-gram twice (distinct n-grams of one
                # order collide with probability ~ top_k^2 / 2^41); the lookup needs unique keys.
                raise ValueError(f"{config.path}: an {n}-gram is listed twice, or two keys collide")
            self.register_buffer(f"keys{n}", sorted_keys)
            self.register_buffer(f"tokens{n}", mined[n][perm])
            self.register_buffer(f"rows{n}", perm + i * config.top_k)
        self.ngram = EmbeddingCollection(
            tables=[EmbeddingConfig(name="frequent", embedding_dim=dim,
                                    num_embeddings=self.num_rows + 1, feature_names=["frequent"])],
            device=torch.device("cpu"),
        )
        self.reset_ngram_tables()

    def table_parameters(self) -> list[nn.Parameter]:
        return list(self.ngram.parameters())

    @torch.no_grad()
    def reset_ngram_tables(self) -> None:
        """Rows = mean of their tokens' current 1-gram embeddings (or zero)."""
        weight = self.ngram.embeddings["frequent"].weight
        weight.zero_()
        if self.config.init == "zero":
            return
        for n in self.orders:
            tokens, rows = getattr(self, f"tokens{n}"), getattr(self, f"rows{n}")
            weight[rows] = self.token.weight[tokens].mean(dim=1).to(weight.dtype)

    def row_ids(self, tokens: torch.Tensor, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Row [len(orders), B, T] of the kept n-gram ending at each position; ``num_rows`` on a miss."""
        out = []
        for n in self.orders:
            keys, kept, rows = (getattr(self, f"{name}{n}") for name in ("keys", "tokens", "rows"))
            query = ngram_ids(tokens, n, self.vocab_size, KEY_MODULUS, self.pad_id, doc_ids)
            where = torch.searchsorted(keys, query).clamp(max=len(keys) - 1)
            hit = keys[where] == query
            hit &= (kept[where] == ngram_windows(tokens, n, self.pad_id, doc_ids)).all(dim=-1)
            out.append(torch.where(hit, rows[where], torch.full_like(where, self.num_rows)))
        return torch.stack(out)

    def _rows(self, ids: torch.Tensor) -> torch.Tensor:
        n_orders, batch, length = ids.shape
        flat = ids.flatten()
        features = KeyedJaggedTensor.from_lengths_sync(
            keys=["frequent"], values=flat,
            lengths=torch.ones(flat.numel(), dtype=torch.int32, device=ids.device),
        )
        vectors = self.ngram(features)["frequent"].values()
        vectors = vectors * (flat != self.num_rows).unsqueeze(-1).to(vectors.dtype)
        return vectors.view(n_orders, batch, length, -1).sum(dim=0)

    def forward(self, tokens: torch.Tensor, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.token(tokens) + self._rows(self.row_ids(tokens, doc_ids))

    def forward_last(self, recent: torch.Tensor) -> torch.Tensor:
        recent = recent[:, -(self.context_size + 1):]
        return self.token(recent[:, -1:]) + self._rows(self.row_ids(recent)[:, :, -1:])

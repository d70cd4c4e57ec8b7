"""Statistics of the Over-Encoding n-gram tables, logged per order during training.

Over a window of ``every_n_steps`` training batches, for each order n:
- ``ngram/order{n}/rows_touched``: distinct table rows read (summed over the order's slices);
- ``ngram/order{n}/ngrams_per_row``: distinct n-grams seen per touched row; 1.0 means no
  collision in the window, 2.0 means rows are shared by two n-grams on average;
- ``ngram/order{n}/norm_ratio``: mean over positions of |n-gram contribution of order n| /
  |1-gram embedding| (both before the final 1/(1+k|orders|) scaling and any gate; the tables of
  the first injection layer).

and for each table, by hash family and head (the table name reads order and head):
- ``ngram/{family}/{table}/rows_touched`` and ``ngram/{family}/{table}/ngrams_per_row``, e.g.
  ``ngram/multiply_xor/ngram3_1/ngrams_per_row``.
"""

from __future__ import annotations

from collections import defaultdict

import lightning as L
import torch

from oe.models.embedding import OverEncoding
from oe.models.ngram import KEY_MODULUS, hashed_ids, ngram_ids


class NgramTableStats(L.Callback):
    """Log row usage, collisions and contribution norms of the n-gram tables.

    Args:
        every_n_steps: length of the window, in training batches, between two logs.
    """

    def __init__(self, every_n_steps: int = 100) -> None:
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"NgramTableStats.every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self._reset()

    def _reset(self) -> None:
        self._rows: dict[str, list[torch.Tensor]] = defaultdict(list)
        self._pairs: dict[str, list[torch.Tensor]] = defaultdict(list)
        self._ratios: dict[int, list[float]] = defaultdict(list)

    @staticmethod
    def _embedding(pl_module: L.LightningModule) -> OverEncoding | None:
        embedding = pl_module.model.embedding
        return embedding if isinstance(embedding, OverEncoding) else None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        embedding = self._embedding(pl_module)
        if embedding is not None:
            embedding.keep_slices = True

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        embedding = self._embedding(pl_module)
        if embedding is None:
            return
        embedding.keep_slices = False
        tokens = batch["input_ids"][:, :-1]
        doc_ids = batch.get("doc_ids")
        doc_ids = None if doc_ids is None else doc_ids[:, :-1]
        real = tokens != embedding.pad_id
        for t in embedding.tables:
            rows = hashed_ids(tokens, t.hash, embedding.vocab_size, embedding.pad_id,
                              doc_ids)[real]
            keys = ngram_ids(tokens, t.order, embedding.vocab_size, KEY_MODULUS,
                             embedding.pad_id, doc_ids)[real]
            self._rows[t.name].append(torch.unique(rows))
            self._pairs[t.name].append(torch.unique(torch.stack([rows, keys], 1), dim=0))
        self._record_norms(embedding, tokens, real)
        if (batch_idx + 1) % self.every_n_steps == 0:
            self._log(pl_module, embedding)

    def _record_norms(self, embedding: OverEncoding, tokens: torch.Tensor,
                      real: torch.Tensor) -> None:
        slices = embedding.last_slices
        if slices is None:
            return
        unigram = embedding.token(tokens).norm(dim=-1)[real]
        first = embedding.tables_of(embedding.layers[0])
        start = 0
        for order in sorted(embedding.config.orders):
            width = sum(t.width for t in first if t.order == order)
            part = slices[..., start : start + width]
            if embedding.projection is not None:
                part = part @ embedding.projection.weight[:, start : start + width].T
            start += width
            ratio = (part.norm(dim=-1)[real] / unigram.clamp_min(1e-12)).mean()
            self._ratios[order].append(float(ratio))
        embedding.last_slices = None

    def _log(self, pl_module: L.LightningModule, embedding: OverEncoding) -> None:
        for order in sorted(embedding.config.orders):
            names = [t.name for t in embedding.tables if t.order == order]
            touched = sum(int(torch.unique(torch.cat(self._rows[n])).numel()) for n in names)
            pairs = sum(int(torch.unique(torch.cat(self._pairs[n]), dim=0).shape[0])
                        for n in names)
            prefix = f"ngram/order{order}"
            pl_module.log(f"{prefix}/rows_touched", float(touched))
            pl_module.log(f"{prefix}/ngrams_per_row", pairs / max(touched, 1))
            if self._ratios[order]:
                ratios = self._ratios[order]
                pl_module.log(f"{prefix}/norm_ratio", sum(ratios) / len(ratios))
        for t in embedding.tables:
            touched = int(torch.unique(torch.cat(self._rows[t.name])).numel())
            pairs = int(torch.unique(torch.cat(self._pairs[t.name]), dim=0).shape[0])
            prefix = f"ngram/{t.hash.family}/{t.name}"
            pl_module.log(f"{prefix}/rows_touched", float(touched))
            pl_module.log(f"{prefix}/ngrams_per_row", pairs / max(touched, 1))
        self._reset()

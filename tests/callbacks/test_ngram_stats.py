"""callbacks.ngram_stats: rows touched and collisions are counted, norms are finite."""

from __future__ import annotations

import lightning as L
import torch

from callbacks.ngram_stats import NgramTableStats
from oe.models.embedding import OverEncodingConfig
from oe.training.lm import LanguageModel
from oe.models.gpt import BackboneConfig


class _Logged(LanguageModel):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.logged: dict[str, float] = {}

    def log(self, name, value, *args, **kwargs):
        self.logged[name] = float(value)


def _run(modulus: int, **over_encoding) -> dict[str, float]:
    module = _Logged(vocab_size=6, backbone=BackboneConfig(n_layer=1, n_head=2, n_embd=8,
                                                           block_size=32),
                     over_encoding=OverEncodingConfig(orders=[2, 3], modulus=modulus,
                                                      **over_encoding))
    # Row 0: BOS 1 2 3 1 2 3 EOS; row 1 repeats one 2-gram.
    batch = {"input_ids": torch.tensor([[4, 1, 2, 3, 1, 2, 3, 5, 0], [4, 2, 2, 2, 2, 2, 2, 2, 5]])}
    stats = NgramTableStats(every_n_steps=1)
    trainer = L.Trainer(logger=False, enable_progress_bar=False)
    stats.on_train_batch_start(trainer, module, batch, 0)
    module.model(batch["input_ids"][:, :-1])
    stats.on_train_batch_end(trainer, module, None, batch, 0)
    return module.logged


def test_counts_match_a_hand_count():
    logged = _run(modulus=1009)  # exact: one n-gram per row
    # 2-grams at real positions: (0,4) (4,1) (1,2) (2,3) (3,1) (1,2) (2,3) (3,5) | (0,4) (4,2)
    # (2,2) x5, (2,2) -> distinct: (0,4) (4,1) (1,2) (2,3) (3,1) (3,5) (4,2) (2,2) = 8
    assert logged["ngram/order2/rows_touched"] == 8
    assert logged["ngram/order2/ngrams_per_row"] == 1.0
    assert logged["ngram/order2/norm_ratio"] > 0


def test_collisions_show_as_more_than_one_ngram_per_row():
    logged = _run(modulus=3)  # 3 rows for 8 distinct 2-grams
    assert logged["ngram/order2/rows_touched"] <= 3
    assert logged["ngram/order2/ngrams_per_row"] > 2.5


def test_collisions_are_reported_per_family_and_head():
    exact = _run(modulus=1009, heads=2)
    assert exact["ngram/polynomial/ngram2_0/ngrams_per_row"] == 1.0
    assert exact["ngram/polynomial/ngram2_1/rows_touched"] == 8
    hashed = _run(modulus=5, hash="multiply_xor", heads=2)  # 5 and 7 rows for 8 distinct 2-grams
    for head, rows in (("ngram2_0", 5), ("ngram2_1", 7)):
        touched = hashed[f"ngram/multiply_xor/{head}/rows_touched"]
        assert touched <= rows
        assert hashed[f"ngram/multiply_xor/{head}/ngrams_per_row"] == 8 / touched
    assert "ngram/polynomial/ngram2_0/rows_touched" not in hashed

"""The n-gram tables train on the dense schedule on every path: plain, sharded, AdamW or SGD."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from oe.distributed.parallelize import local_shard, sharded_collections
from oe.models.embedding import OverEncodingConfig
from oe.training.lm import LanguageModel, OptimizerConfig
from tests.conftest import tiny_language_model

VOCAB, STEPS = 11, 6


def _model(shard_tables: bool, table_optimizer: str | None) -> LanguageModel:
    tables = OverEncodingConfig(orders=[2, 3], k=2, modulus=101, table_lr=0.5,
                                table_optimizer=table_optimizer, shard_tables=shard_tables)
    return tiny_language_model(VOCAB, tables, optimizer=OptimizerConfig(lr=1e-2, warmup_steps=2,
                                                                        min_lr_ratio=0.1))


def _batches() -> list[dict]:
    generator = torch.Generator().manual_seed(3)
    return [{"input_ids": torch.randint(1, VOCAB, (4, 13), generator=generator)}
            for _ in range(STEPS)]


class _Rates(L.Callback):
    """Per step: the dense rate, the tables' rate the model set, and what it logged."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float, float]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        logged = float(trainer.callback_metrics["train/lr_tables"])
        self.rows.append((optimizer.param_groups[0]["lr"], pl_module._table_lr, logged))


def _fit(model: LanguageModel, *callbacks: L.Callback) -> LanguageModel:
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=STEPS, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, gradient_clip_val=1.0,
                        callbacks=list(callbacks))
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(_batches(), batch_size=None))
    return model


def _tables(model: LanguageModel) -> dict[str, torch.Tensor]:
    collections = sharded_collections(model)
    if collections:
        (collection,) = collections.values()
        return {name: local_shard(collection, name).detach().clone()
                for name in collection.embeddings.keys()}
    return {name: table.weight.detach().clone()
            for name, table in model.model.embedding.ngram.embeddings.items()}


def test_sharded_sgd_tables_equal_plain_sgd_tables_after_scheduled_steps():
    start = _tables(_model(shard_tables=False, table_optimizer="sgd"))
    plain = _tables(_fit(_model(shard_tables=False, table_optimizer="sgd")))
    sharded_model = _fit(_model(shard_tables=True, table_optimizer="sgd"))
    sharded = _tables(sharded_model)
    assert plain.keys() == sharded.keys()
    for name in plain:
        assert not torch.equal(plain[name], start[name])  # the tables did train
        torch.testing.assert_close(sharded[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("shard_tables, table_optimizer",
                         [(True, None), (False, None), (False, "sgd")])
def test_logged_table_rate_is_the_dense_rate_times_the_ratio(shard_tables, table_optimizer):
    rates = _Rates()
    model = _fit(_model(shard_tables, table_optimizer), rates)
    assert len(rates.rows) == STEPS
    dense_rates = [dense for dense, _, _ in rates.rows]
    assert dense_rates[0] < dense_rates[1] and dense_rates[-1] < max(dense_rates)  # warm-up, decay
    for dense, set_rate, logged in rates.rows:
        assert set_rate == pytest.approx(dense * 0.5 / 1e-2)
        assert logged == pytest.approx(set_rate)
    for collection in sharded_collections(model).values():
        assert collection.fused_optimizer.param_groups[0]["lr"] == pytest.approx(rates.rows[-1][1])


@pytest.mark.parametrize("shard_tables, table_optimizer, allowed",
                         [(True, "adamw", "rowwise_adagrad"), (False, "rowwise_adagrad", "adamw, sgd")])
def test_an_optimiser_the_path_cannot_run_is_named(shard_tables, table_optimizer, allowed):
    with pytest.raises(ValueError, match=f"table_optimizer '{table_optimizer}'.*{allowed}"):
        _fit(_model(shard_tables, table_optimizer))

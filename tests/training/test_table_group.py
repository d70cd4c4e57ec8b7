"""The tables' optimiser group: rate multiplier, weight decay and betas on every path that can run
them, and one error naming the field on a path that cannot."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from oe.distributed.parallelize import (TableSharding, fused_params, local_shard, shard_embedding,
                                        table_betas, table_lr, table_optimizer)
from oe.models.embedding import OverEncoding, OverEncodingConfig
from oe.training.lm import LanguageModel, OptimizerConfig
from tests.conftest import tiny_language_model

VOCAB = 11


class _Capture(L.Callback):
    """Before each optimiser step: the dense rate, the tables' group, one table's weight and
    gradient."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        weight = pl_module.table_parameters()[0]
        group = next(g for g in optimizer.param_groups if any(p is weight for p in g["params"]))
        self.steps.append({"dense_lr": optimizer.param_groups[0]["lr"], "group": dict(group),
                           "weight": weight.detach().clone(), "grad": weight.grad.clone(),
                           "table_lr": pl_module._table_lr})


def _fit(model: LanguageModel, steps: int, *callbacks) -> LanguageModel:
    generator = torch.Generator().manual_seed(3)
    batches = [{"input_ids": torch.randint(1, VOCAB, (4, 13), generator=generator)}
               for _ in range(steps)]
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=list(callbacks))
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    return model


def test_plain_tables_train_in_their_own_adamw_group_with_their_betas_rate_and_decay():
    tables = OverEncodingConfig(orders=[2, 3], modulus=101, shard_tables=False,
                                table_lr_multiplier=5.0, table_betas=(0.75, 0.95),
                                table_weight_decay=0.01)
    capture = _Capture()
    model = _fit(tiny_language_model(VOCAB, tables, optimizer=OptimizerConfig(
        lr=1e-2, warmup_steps=0, betas=(0.9, 0.98), weight_decay=0.1)), 2, capture)
    first, second = capture.steps
    assert first["group"]["betas"] == (0.75, 0.95) and first["group"]["weight_decay"] == 0.01
    assert first["group"]["initial_lr"] == pytest.approx(5e-2)
    for step in capture.steps:  # the rate follows the dense schedule at 5x
        assert step["group"]["lr"] == pytest.approx(5 * step["dense_lr"])
        assert step["table_lr"] == pytest.approx(5 * step["dense_lr"])
    assert model.trainer.optimizers[0].param_groups[0]["betas"] == (0.9, 0.98)
    # Two AdamW steps by hand with betas (0.75, 0.95) land on the table's values after them.
    b1, b2, eps, wd = 0.75, 0.95, 1e-8, 0.01
    w, m, v = first["weight"].double(), 0.0, 0.0
    for t, step in enumerate(capture.steps, start=1):
        g, lr = step["grad"].double(), step["group"]["lr"]
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        w = w * (1 - lr * wd) - lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
    after = model.table_parameters()[0].detach().double()
    assert not torch.equal(after, second["weight"].double())
    torch.testing.assert_close(after, w, rtol=1e-5, atol=1e-7)


def test_sharded_rowwise_adagrad_decays_the_rows_it_updates():
    """Decoupled decay in the fused kernel: a touched row with a zero gradient becomes
    w (1 - lr wd); FBGEMM's default mode would ignore the decay."""
    torch.manual_seed(0)
    emb = OverEncoding(7, 8, OverEncodingConfig(orders=[2], modulus=11, init_std=1.0))
    shard_embedding(emb, TableSharding("rowwise_adagrad", lr=0.1, weight_decay=0.5,
                                       seed=emb.table_seed, init_std=1.0), torch.device("cpu"))
    before = local_shard(emb.ngram, "ngram2_0").clone()
    (emb(torch.tensor([[1, 2]])).sum() * 0).backward()  # rows 1 (pad, 1) and 9 (1, 2)
    after = local_shard(emb.ngram, "ngram2_0")
    expected = before.clone()
    expected[[1, 9]] *= 1 - 0.1 * 0.5
    torch.testing.assert_close(after, expected)


def test_the_rate_multiplier_and_betas_resolve_against_the_dense_settings():
    assert table_lr(OverEncodingConfig(table_lr_multiplier=5.0), 3e-4) == pytest.approx(1.5e-3)
    assert table_lr(OverEncodingConfig(table_lr=0.05), 3e-4) == 0.05
    assert table_lr(OverEncodingConfig(), 3e-4) == 3e-4
    assert table_betas(OverEncodingConfig(), [0.9, 0.98]) == (0.9, 0.98)
    assert table_betas(OverEncodingConfig(table_betas=(0.75, 0.95)), (0.9, 0.98)) == (0.75, 0.95)
    params = fused_params("adam", 0.1, 0.0, torch.device("cuda"), (0.75, 0.95))  # settings only
    assert (params["beta1"], params["beta2"]) == (0.75, 0.95)


@pytest.mark.parametrize("fields,message", [
    (dict(table_optimizer="sgd", table_weight_decay=0.1), "table_weight_decay 0.1 cannot apply.*'sgd'"),
    (dict(table_optimizer="adagrad", table_weight_decay=0.1), "table_weight_decay.*'adagrad'"),
    (dict(shard_tables=False, table_optimizer="sgd", table_weight_decay=0.1),
     "table_weight_decay.*choose table_optimizer adamw"),
    (dict(table_betas=(0.75, 0.95)), "table_betas \\[0.75, 0.95\\] cannot apply.*'rowwise_adagrad'.*adam"),
    (dict(shard_tables=False, table_optimizer="sgd", table_betas=(0.75, 0.95)), "table_betas"),
])
def test_a_setting_the_tables_optimiser_cannot_apply_is_named(fields, message):
    with pytest.raises(ValueError, match=message):
        table_optimizer(OverEncodingConfig(**fields))


@pytest.mark.parametrize("fields,message", [
    (dict(table_lr=0.1, table_lr_multiplier=5.0), "set one of them"),
    (dict(table_lr_multiplier=0.0), "table_lr_multiplier must be > 0"),
])
def test_bad_rates_are_named(fields, message):
    with pytest.raises(ValueError, match=message):
        table_lr(OverEncodingConfig(**fields), 1e-3)


def test_bad_betas_are_named_before_training():
    tables = OverEncodingConfig(orders=[2], modulus=101, shard_tables=False, table_betas=(1.0, 0.9))
    with pytest.raises(ValueError, match=r"table_betas must be two numbers in \[0, 1\)"):
        _fit(tiny_language_model(VOCAB, tables), 1)

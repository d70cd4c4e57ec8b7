"""LanguageModel steps: packed rows = padded rows, micro-batches = one whole batch."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch

from datamodules.cfg import CFGDataModule, collate, pack
from oe.cfg import sample
from oe.models.embedding import OverEncodingConfig
from oe.models.gpt import BackboneConfig
from oe.models.heads import OutputHeadsConfig
from oe.training.lm import LanguageModel, OptimizerConfig
from tests.conftest import FirstGradients

BACKBONE = BackboneConfig(n_layer=2, n_head=2, n_embd=16, block_size=1024)
KINDS = {
    "baseline": {},
    "oe3": {"over_encoding": OverEncodingConfig(orders=[2, 3], modulus=1009, shard_tables=False)},
    "od3": {"heads": OutputHeadsConfig(od_offsets=[2, 3], lambdas=[0.5, 0.25])},
    "ot3": {"over_encoding": OverEncodingConfig(orders=[2, 3], modulus=1009, shard_tables=False),
            "heads": OutputHeadsConfig(mtp=True)},
}


def _model(kind: str) -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(backbone=BACKBONE, optimizer=OptimizerConfig(warmup_steps=0), **KINDS[kind])


def _objective_and_grads(model: LanguageModel, batch: dict) -> tuple[float, dict]:
    model.zero_grad(set_to_none=True)
    loss_sum, n, extra = model._loss(batch)
    objective = loss_sum / n + sum(h.weight * h.mean for h in extra)
    objective.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return float(objective), grads


@pytest.mark.parametrize("kind", list(KINDS))
def test_packed_step_equals_padded_step(kind):
    symbols, lengths = sample(7, np.arange(9))
    tokens, doc_ids = pack(symbols, lengths, row_tokens=760)
    assert tokens.shape[0] < len(lengths)
    model = _model(kind)
    padded = _objective_and_grads(model, {"input_ids": collate(symbols, lengths)})
    packed = _objective_and_grads(model, {"input_ids": tokens, "doc_ids": doc_ids,
                                          "isolate_documents": True})
    assert packed[0] == pytest.approx(padded[0], rel=1e-5)
    assert packed[1].keys() == padded[1].keys()
    for name, grad in padded[1].items():
        torch.testing.assert_close(packed[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def _train(kind: str, micro_batch_tokens: int, packed: bool, tmp_path, strategy="auto",
           model: LanguageModel | None = None, precision: str = "32-true") -> tuple[dict, dict]:
    model = model or _model(kind)
    data = CFGDataModule(batch_size=12, train_sentences=48, epochs=1, val_sentences=12,
                         num_workers=0, packed=packed, micro_batch_tokens=micro_batch_tokens)
    first = next(iter(data.train_stream(0, 1)))
    if micro_batch_tokens < 1 << 20:  # the budget really splits the batch
        assert first["micro_batch_rows"] < first["input_ids"].shape[0]
    grads = FirstGradients()
    trainer = L.Trainer(max_steps=2, default_root_dir=tmp_path, logger=False, accelerator="cpu",
                        devices=1, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[grads], enable_checkpointing=False,
                        gradient_clip_val=1.0, strategy=strategy, precision=precision)
    trainer.fit(model, datamodule=data)
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    for index, table in enumerate(model.table_parameters()):
        params[f"table{index}"] = table.detach().clone()
    return grads.grads, params


@pytest.mark.parametrize("kind,packed", [("baseline", True), ("ot3", True),
                                         ("oe3", False)])
def test_micro_batches_give_the_whole_batch_update(kind, packed, tmp_path):
    whole = _train(kind, 1 << 20, packed, tmp_path / "whole")
    split = _train(kind, 1024 if packed else 736, packed, tmp_path / "split")
    for name, grad in whole[0].items():
        torch.testing.assert_close(split[0][name], grad, rtol=1e-4, atol=1e-7, msg=name)
    for name, param in whole[1].items():
        torch.testing.assert_close(split[1][name], param, rtol=1e-4, atol=1e-6, msg=name)


def test_micro_batch_budget_below_the_longest_row_is_named():
    with pytest.raises(ValueError, match="data.micro_batch_tokens"):
        CFGDataModule(micro_batch_tokens=512)
    with pytest.raises(ValueError, match="data.row_tokens"):
        CFGDataModule(row_tokens=700)


def test_micro_batches_update_sharded_tables_once_per_step(tmp_path):
    """A fused table optimiser updates in backward: the embedding's backward runs once a step."""
    from oe.training.strategy import ShardedTableStrategy

    def model() -> LanguageModel:
        torch.manual_seed(0)
        # Row-wise Adagrad is not linear in the gradient: two half updates differ from one.
        tables = OverEncodingConfig(orders=[2, 3], modulus=1009,
                                    table_optimizer="rowwise_adagrad", table_lr=0.5)
        return LanguageModel(backbone=BACKBONE, over_encoding=tables,
                             optimizer=OptimizerConfig(warmup_steps=0))

    whole = _train("oe3", 1 << 20, True, tmp_path / "whole", ShardedTableStrategy(), model())
    split = _train("oe3", 1024, True, tmp_path / "split", ShardedTableStrategy(), model())
    assert any(k.startswith("table") for k in whole[1])
    for name, param in whole[1].items():
        torch.testing.assert_close(split[1][name], param, rtol=1e-4, atol=1e-6, msg=name)


# Every memory option at once (inner layers, per-layer tables, gate, multiply_xor), and memory
# that enters only before an inner block (the input is then the plain token embedding).
MEMORY_OPTIONS = {
    "all_options": {"layers": [0, 1], "per_layer_tables": True, "gate": True,
                    "hash": "multiply_xor"},
    "inner_only": {"layers": [1]},
}


@pytest.mark.parametrize("sharded", [False, True], ids=["plain", "sharded"])
@pytest.mark.parametrize("option", list(MEMORY_OPTIONS))
def test_micro_batches_carry_the_inner_layers_memory(option, sharded, tmp_path):
    """Each micro-batch takes the memory of its own rows: the update is the whole batch's."""
    from oe.training.strategy import ShardedTableStrategy

    def model() -> LanguageModel:
        torch.manual_seed(0)
        tables = OverEncodingConfig(orders=[2, 3], modulus=1009, shard_tables=sharded,
                                    table_lr=0.5, **MEMORY_OPTIONS[option])
        return LanguageModel(backbone=BACKBONE, over_encoding=tables,
                             optimizer=OptimizerConfig(warmup_steps=0))

    def train(budget: int, folder: str) -> tuple[dict, dict]:
        strategy = ShardedTableStrategy() if sharded else "auto"
        return _train("oe3", budget, True, tmp_path / folder, strategy, model())

    whole, split = train(1 << 20, "whole"), train(1024, "split")
    assert any(k.startswith("table") for k in whole[1])
    for name, grad in whole[0].items():
        torch.testing.assert_close(split[0][name], grad, rtol=1e-4, atol=1e-7, msg=name)
    for name, param in whole[1].items():
        torch.testing.assert_close(split[1][name], param, rtol=1e-4, atol=1e-6, msg=name)


def test_the_model_section_is_model_configs_fields_and_the_optimizer():
    """LightningCLI reads the model section from ModelConfig (through LanguageModel's
    ``**settings``): its fields, flat, with their defaults and help, beside the optimiser; the
    hyper-parameters a checkpoint keeps are every one of them."""
    import dataclasses

    from oe.cli.config import fit_parser
    from oe.models.config import ModelConfig

    parser = fit_parser()
    defaults = parser.get_defaults().model
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    linked = {"vocab_size", "pad_id"}  # from the data module
    assert {key.split(".")[0] for key in defaults.keys()} == (fields - linked) | {"optimizer"}
    assert defaults.backbone.as_dict() == dataclasses.asdict(ModelConfig().backbone)
    assert defaults.over_encoding is None and defaults.freeze_backbone is False
    assert "the n-gram tables" in parser.format_help()  # ModelConfig's own help
    model = LanguageModel(backbone=BACKBONE)
    assert set(model.hparams) == fields | {"optimizer"}
    assert ModelConfig.from_section(model.hparams) == model.model_config

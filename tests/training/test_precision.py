"""bf16-mixed on the CPU: losses and gradients near fp32's, fp32 where it must be, clear refusals."""

from __future__ import annotations

import warnings

import lightning as L
import numpy as np
import pytest
import torch

from datamodules.cfg import CFGDataModule, pack
from oe.cfg import sample
from oe.training.lm import LanguageModel, OptimizerConfig
from oe.training.precision import EmulatedBF16Warning, check_precision
from tests.training.test_lm import BACKBONE, KINDS

# bf16 keeps 8 significant bits (relative rounding 2^-9 = 0.2%). Measured on this batch: loss
# within 2e-5 relative, the whole gradient's cosine to fp32's above 0.99999, each gradient of at
# least 1% of the largest one's norm within 0.5% of fp32's. Small gradients that are sums of
# cancelling per-token terms (the MTP head's final norm bias: 0.2% of the largest norm) keep the
# rounding of their terms, up to 0.11% of the largest norm. Tolerances: a few times these.
LOSS_RTOL = 1e-3
GRAD_COSINE = 0.9999
GRAD_RTOL = 0.02          # for a gradient of at least 1% of the largest one's norm
GRAD_ATOL_SHARE = 5e-3    # for the others: error under this share of the largest norm


def _model(kind: str) -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(backbone=BACKBONE, optimizer=OptimizerConfig(warmup_steps=0),
                         **KINDS[kind])


def _objective_and_grads(model: LanguageModel, batch: dict, bf16: bool):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss_sum, n, extra = model._loss(batch)
        objective = loss_sum / n + sum(h.weight * h.mean for h in extra)
    objective.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return objective, grads


@pytest.mark.parametrize("kind", list(KINDS))
def test_bf16_loss_and_gradients_are_near_fp32_on_a_packed_batch(kind):
    symbols, lengths = sample(7, np.arange(9))
    tokens, doc_ids = pack(symbols, lengths, row_tokens=760)
    batch = {"input_ids": tokens, "doc_ids": doc_ids, "isolate_documents": True}
    model = _model(kind)
    full, full_grads = _objective_and_grads(model, batch, bf16=False)
    half, half_grads = _objective_and_grads(model, batch, bf16=True)
    assert half.dtype == torch.float32  # the loss is reduced in fp32
    full, half = float(full.detach()), float(half.detach())
    assert half == pytest.approx(full, rel=LOSS_RTOL)
    assert half_grads.keys() == full_grads.keys()
    whole = torch.cat([g.flatten() for g in full_grads.values()])
    assert torch.cosine_similarity(torch.cat([half_grads[k].flatten() for k in full_grads]),
                                   whole, dim=0) > GRAD_COSINE
    largest = max(float(g.norm()) for g in full_grads.values())
    for name, grad in full_grads.items():
        other = half_grads[name]
        assert other.dtype == torch.float32, name  # fp32 parameters get fp32 gradients
        error, norm = float((other - grad).norm()), float(grad.norm())
        if norm >= 0.01 * largest:
            assert error <= GRAD_RTOL * norm, (name, error / norm)
        else:
            assert error <= GRAD_ATOL_SHARE * largest, (name, error / largest)
    assert all(p.dtype == torch.float32 for p in model.parameters())


class _Losses(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def _train_losses(precision: str, tmp_path) -> list[float]:
    torch.manual_seed(0)
    model = LanguageModel(backbone=BACKBONE, optimizer=OptimizerConfig(lr=3e-3, warmup_steps=2),
                          **KINDS["oe3"])
    data = CFGDataModule(batch_size=8, train_sentences=8 * 12, epochs=1, val_sentences=8,
                         num_workers=0)
    losses = _Losses()
    trainer = L.Trainer(max_steps=12, default_root_dir=tmp_path, logger=False, accelerator="cpu",
                        devices=1, precision=precision, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[losses],
                        enable_checkpointing=False, gradient_clip_val=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmulatedBF16Warning)
        trainer.fit(model, datamodule=data)
    return losses.losses


def test_a_short_bf16_run_tracks_the_fp32_loss_curve(tmp_path):
    full = _train_losses("32-true", tmp_path / "fp32")
    half = _train_losses("bf16-mixed", tmp_path / "bf16")
    assert len(full) == len(half) == 12
    assert full[-1] < full[0] - 0.1  # it learns, so the curves are worth comparing
    for step, (a, b) in enumerate(zip(full, half)):
        assert b == pytest.approx(a, abs=0.02), step


@pytest.mark.parametrize("precision", ["16-mixed", "16"])
def test_float16_on_the_cpu_is_refused_naming_the_field(precision):
    with pytest.raises(ValueError, match=r"trainer\.precision is 16.*bf16-mixed"):
        check_precision(precision, "cpu", frozenset({"avx512_bf16"}))


def test_emulated_bf16_warns_once_naming_the_field():
    with pytest.warns(EmulatedBF16Warning, match=r"trainer\.precision is bf16-mixed.*emulated"
                      ) as caught:
        check_precision("bf16-mixed", "cpu", frozenset({"avx2", "avx512f"}))
    assert len(caught) == 1


@pytest.mark.parametrize("flags", [{"avx512_bf16"}, {"amx_bf16", "amx_tile"}, {"bf16", "asimd"}])
def test_native_bf16_and_fp32_pass_quietly(flags):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_precision("bf16-mixed", "cpu", frozenset(flags))
        check_precision("32-true", "cpu", frozenset())
        check_precision("16-mixed", "cuda", frozenset())  # not a CPU run: not this check's


def test_oe_fit_refuses_float16_on_the_cpu_before_training(tmp_path, capsys):
    from oe.cli.fit import main

    run = tmp_path / "run"
    code = main(["--config", "configs/cfg_baseline.yaml", "--config",
                 "configs/presets/laptop_cfg.yaml", "--trainer.precision", "16-mixed",
                 "--trainer.logger", "false", "--run_dir", str(run)])
    assert code == 2
    error = capsys.readouterr().err
    assert "trainer.precision is 16-mixed" in error
    assert not (run / "finished.json").exists() and not (run / "checkpoints").exists()


@pytest.mark.parametrize("sharded", [False, True], ids=["plain", "sharded"])
def test_bf16_micro_batches_with_every_memory_option_give_fp32s_first_gradients(sharded,
                                                                               tmp_path):
    """Packed micro-batches, inner-layer memory, per-layer tables, gate, plain or sharded tables:
    the first step's gradients under bf16-mixed point where fp32's do, and the tables stay fp32."""
    from oe.training.strategy import ShardedTableStrategy
    from oe.models.embedding import OverEncodingConfig
    from tests.training.test_lm import MEMORY_OPTIONS, _train

    def model() -> LanguageModel:
        torch.manual_seed(0)
        tables = OverEncodingConfig(orders=[2, 3], modulus=1009, shard_tables=sharded,
                                    table_lr=0.5, **MEMORY_OPTIONS["all_options"])
        return LanguageModel(backbone=BACKBONE, over_encoding=tables,
                             optimizer=OptimizerConfig(warmup_steps=0))

    def train(precision: str) -> tuple[dict, dict]:
        strategy = ShardedTableStrategy() if sharded else "auto"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EmulatedBF16Warning)
            return _train("oe3", 1024, True, tmp_path / precision, strategy, model(), precision)

    (full_grads, full_params), (half_grads, half_params) = train("32-true"), train("bf16-mixed")
    assert half_grads.keys() == full_grads.keys() and full_grads
    whole = torch.cat([g.flatten() for g in full_grads.values()])
    assert torch.cosine_similarity(torch.cat([half_grads[k].flatten() for k in full_grads]),
                                   whole, dim=0) > GRAD_COSINE
    tables = [k for k in half_params if k.startswith("table")]
    assert tables and all(half_params[k].dtype == torch.float32 for k in tables)
    assert all(torch.isfinite(p).all() for p in half_params.values())

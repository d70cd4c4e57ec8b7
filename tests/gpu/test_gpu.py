"""The GPU tier: what only runs on CUDA, checked against the paths the CPU tests cover.

Run first on a new cluster: ``oe bench gpu`` (these tests, then the throughput suite). Skipped,
with the reason, where CUDA is absent.
"""

from __future__ import annotations

import importlib.util

import lightning as L
import numpy as np
import pytest
import torch

from datamodules.cfg import pack
from oe.cfg import sample
from oe.models.embedding import HostTables, OverEncodingConfig
from oe.models.gpt import BackboneConfig
from oe.training.lm import LanguageModel, OptimizerConfig

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CUDA = torch.device("cuda")
TABLES = OverEncodingConfig(orders=[2, 3], modulus=1009, shard_tables=False)


def _model(over_encoding=None, compile: bool = False, seed: int = 0) -> LanguageModel:
    torch.manual_seed(seed)
    backbone = BackboneConfig(n_layer=2, n_head=2, n_embd=32, block_size=1024, compile=compile)
    return LanguageModel(backbone=backbone, over_encoding=over_encoding,
                         optimizer=OptimizerConfig(warmup_steps=0)).to(CUDA)


def _packed_batch(sentences: int, row_tokens: int, seed: int = 0) -> dict:
    symbols, lengths = sample(seed, np.arange(sentences))
    tokens, doc_ids = pack(symbols, lengths, row_tokens, multiple=128)
    return {"input_ids": tokens.to(CUDA), "doc_ids": doc_ids.to(CUDA), "isolate_documents": True}


def _loss_and_grads(model: LanguageModel, batch: dict) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    loss_sum, count, _ = model._loss(batch)
    loss = loss_sum / count
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters()
                           if p.grad is not None}


def _assert_same(a, b, rtol=1e-4, atol=1e-5) -> None:
    torch.testing.assert_close(a[0], b[0], rtol=rtol, atol=atol)
    assert a[1].keys() == b[1].keys()
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("row_tokens", [768, 1024, 2048])
def test_flex_attention_equals_the_reference_path(row_tokens):
    """FlexAttention's forward and backward (no CPU backward exists) equal the dense mask."""
    batch = _packed_batch(12, row_tokens)
    flex, dense = _model(TABLES), _model(TABLES)
    flex.model.document_attention = "flex"
    dense.model.document_attention = "dense"
    _assert_same(_loss_and_grads(flex, batch), _loss_and_grads(dense, batch))


def test_compiled_blocks_equal_eager():
    batch = _packed_batch(12, 1024)
    _assert_same(_loss_and_grads(_model(TABLES, compile=True), batch),
                 _loss_and_grads(_model(TABLES, compile=False), batch))


def _curve(precision: str, tmp_path) -> list[float]:
    from datamodules.cfg import CFGDataModule

    class Losses(L.Callback):
        def __init__(self):
            self.values = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.values.append(float(outputs["loss"]))

    losses = Losses()
    data = CFGDataModule(batch_size=16, train_sentences=16 * 20, epochs=1, val_sentences=16,
                         num_workers=0)
    trainer = L.Trainer(max_steps=20, accelerator="cuda", devices=1, precision=precision,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        limit_val_batches=0, callbacks=[losses], default_root_dir=tmp_path)
    trainer.fit(_model(TABLES), datamodule=data)
    return losses.values


def test_bf16_mixed_tracks_fp32_for_20_steps(tmp_path):
    fp32, bf16 = _curve("32-true", tmp_path / "fp32"), _curve("bf16-mixed", tmp_path / "bf16")
    assert len(fp32) == len(bf16) == 20
    # bf16 matmuls round to 8 bits of mantissa: the curves agree to a few hundredths of a nat.
    assert max(abs(a - b) for a, b in zip(fp32, bf16)) < 0.05, (fp32, bf16)


def test_host_tables_are_pinned_and_give_the_device_tables_logits():
    model = _model(TABLES).model.eval()
    prompts = torch.tensor([[4, 1, 2, 3], [4, 3, 3, 1]], device=CUDA)
    with torch.no_grad():
        on_device = model(prompts)
        host = HostTables(model.embedding, CUDA)
        assert all(w.is_pinned() for w in host.weights)
        x, memory = model.embed(prompts, ngram_rows=host.rows(prompts))
        hosted = model.logits(model.hidden(x, memory=memory))
    torch.testing.assert_close(hosted, on_device)


def test_no_host_synchronisation_in_a_training_step():
    for over_encoding in (None, TABLES):
        model = _model(over_encoding)
        model.trainer = L.Trainer(accelerator="cuda", devices=1, logger=False)
        batch = _packed_batch(24, 1024)
        ids, doc_ids, isolate, _ = model._unpack(batch)
        parts = [slice(0, 1), slice(1, ids.shape[0])]  # two micro-batches
        model._step_objective(ids, doc_ids, isolate, parts)  # warm-up: first-call set-up
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            objective, *_ = model._step_objective(ids, doc_ids, isolate, parts)
            objective.backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")


def _fbgemm_variant() -> str | None:
    if importlib.util.find_spec("fbgemm_gpu") is None:
        return None
    import fbgemm_gpu

    return getattr(fbgemm_gpu, "__variant__", None)


FBGEMM_CUDA = torch.cuda.device_count() > 1 and _fbgemm_variant() == "cuda"


@pytest.mark.skipif(not FBGEMM_CUDA, reason="needs 2 GPUs and the CUDA build of fbgemm-gpu "
                                            "(fused TorchRec tables); without it tables train dense")
def test_fused_rowwise_tables_over_nccl_on_two_gpus_equal_one(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    worker = root / "tests" / "distributed" / "sharding_worker.py"
    for ranks in (1, 2):
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               f"--nproc_per_node={ranks}", str(worker), str(tmp_path), "sgd"],
                              cwd=root, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "OE_TEST_ACCELERATOR": "cuda",
                                   "PYTHONPATH": str(root)})
        assert done.returncode == 0, done.stderr[-4000:]
    one, two = (torch.load(tmp_path / f"sgd_grads_w{w}.pt") for w in (1, 2))
    for key, value in one.items():
        torch.testing.assert_close(two[key], value, rtol=1e-4, atol=1e-6, msg=key)

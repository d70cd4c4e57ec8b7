"""The LightningModule shared by every model kind: baseline and Over-Encoding.

The kinds differ only in the input embedding, chosen by ``over_encoding`` (None: the
baseline). The network comes from ``oe.models.build.build_model`` and the tables' sharding from
``oe.distributed.parallelize``; training, validation, optimisation and logging are written once here.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import lightning as L
import torch

from oe.distributed.checkpoint import record_tokenizer
from oe.distributed.parallelize import parallelize_tables, sharded_collections
from oe.models.build import build_model, model_kind, table_parameters
from oe.models.embedding import OverEncodingConfig
from oe.models.frequent_ngrams import FrequentNgramConfig
from oe.models.gpt import BackboneConfig
from oe.models.heads import HeadLoss, OutputHeadsConfig, total_loss
from oe.models.losses import IGNORE_INDEX, summed_cross_entropy


@dataclass
class OptimizerConfig:
    """AdamW for the dense parameters, with linear warm-up and cosine decay."""

    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.1
    warmup_steps: int = 1000
    min_lr_ratio: float = 0.1


def cosine_with_warmup(step: int, warmup: int, total: int, min_ratio: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class LanguageModel(L.LightningModule):
    """A GPT-2 language model; Over-Encoding when ``over_encoding`` is given.

    Args:
        vocab_size: token ids are ``0 .. vocab_size-1`` (linked from the data module).
        pad_id: padding id, never counted in the loss (linked from the data module).
        backbone: the transformer's shape.
        over_encoding: the n-gram tables; None for the baseline.
        heads: training-only extra heads (Over-Decoding, MTP); None for the next-token head alone.
        optimizer: dense optimiser and schedule.
        frequent_ngrams: mined n-gram rows (oe.analysis.mining) instead of hashed tables; None: none.
        pretrained: GPT-2 weights in HF format (hub id or local directory) for the backbone,
            whose shape then comes from the checkpoint; n-gram tables start afresh.
        freeze_backbone: train only the n-gram tables (and their projection).
    """

    def __init__(
        self,
        vocab_size: int = 6,
        pad_id: int = 0,
        backbone: BackboneConfig = BackboneConfig(),
        over_encoding: OverEncodingConfig | None = None,
        heads: OutputHeadsConfig | None = None,
        optimizer: OptimizerConfig = OptimizerConfig(),
        frequent_ngrams: FrequentNgramConfig | None = None,
        pretrained: str | None = None,
        freeze_backbone: bool = False,
    ) -> None:
        super().__init__()
        if optimizer.warmup_steps < 0 or optimizer.lr <= 0:
            raise ValueError("model.optimizer.lr must be > 0 and warmup_steps >= 0")
        self.save_hyperparameters()
        built = build_model(vocab_size, pad_id, backbone, over_encoding, heads, frequent_ngrams,
                            pretrained, freeze_backbone)
        if pretrained is not None:
            # A checkpoint of this model rebuilds the same shape without the source (the CLI
            # records configs as mappings, a direct call as dataclasses).
            given = self.hparams.get("backbone")
            self.hparams["backbone"] = asdict(built.backbone) if isinstance(given, dict) else built.backbone
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.backbone_config = built.backbone
        self.over_encoding = over_encoding
        self.frequent_ngrams = frequent_ngrams
        self.heads_config = heads
        self.optimizer_config = optimizer
        self.model = built.gpt
        self.heads = built.heads
        self._last_step_time: float | None = None

    @property
    def kind(self) -> str:
        return model_kind(self.over_encoding, self.frequent_ngrams, self.heads_config)

    def forward(self, tokens: torch.Tensor, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(tokens, doc_ids)

    def _loss(self, batch: dict) -> tuple[torch.Tensor, int, list[HeadLoss]]:
        """Summed next-token loss, its number of targets, and the extra heads' losses."""
        ids = batch["input_ids"]
        inputs, targets = ids[:, :-1], ids[:, 1:]
        row_doc_ids = batch.get("doc_ids")
        doc_ids = None if row_doc_ids is None else row_doc_ids[:, :-1]
        targets = targets.masked_fill(targets == self.pad_id, IGNORE_INDEX)
        if self.heads is None:
            return (*summed_cross_entropy(self(inputs, doc_ids), targets), [])
        # The extra heads read the very hidden states and input embeddings of the main path.
        embedded = self.model.embedding(inputs, doc_ids)
        hidden = self.model.hidden(embedded)
        loss_sum, n_tokens = summed_cross_entropy(self.model.logits(hidden), targets)
        extra = self.heads.losses(hidden, embedded, ids, self.model.logits, row_doc_ids)
        return loss_sum, n_tokens, extra

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss_sum, n_tokens, extra = self._loss(batch)
        loss = loss_sum / max(n_tokens, 1)
        self.log("train/loss", loss, prog_bar=True, batch_size=n_tokens)
        if extra:  # train/loss stays the next-token loss, comparable across model kinds
            for head in extra:
                self.log(f"train/loss_{head.name}", head.mean, batch_size=max(head.count, 1))
            loss = total_loss(loss, extra)
            self.log("train/loss_total", loss, batch_size=n_tokens)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=False)
        now = time.perf_counter()
        if self._last_step_time is not None:
            rate = n_tokens * self.trainer.world_size / (now - self._last_step_time)
            self.log("train/tokens_per_s", rate, prog_bar=True)
        self._last_step_time = now
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss_sum, n_tokens, extra = self._loss(batch)
        self.log("val/loss", loss_sum / max(n_tokens, 1), batch_size=n_tokens, sync_dist=True,
                 prog_bar=True)
        for head in extra:
            self.log(f"val/loss_{head.name}", head.mean, batch_size=max(head.count, 1),
                     sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self._last_step_time = None  # validation time is not training throughput

    def table_parameters(self) -> list[torch.nn.Parameter]:
        return table_parameters(self.model)

    def configure_model(self) -> None:
        parallelize_tables(self, self._trainer)  # the tables' sharding: oe.distributed.parallelize

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        record_tokenizer(checkpoint, self.trainer.datamodule)  # what evaluation reads it with

    def configure_optimizers(self):
        settings = self.optimizer_config
        tables = {id(p) for p in self.table_parameters()}
        fused = {id(p) for c in sharded_collections(self).values() for p in c.parameters()}
        dense = [p for p in self.parameters() if p.requires_grad and id(p) not in tables]
        decay = [p for p in dense if p.dim() >= 2]
        no_decay = [p for p in dense if p.dim() < 2]
        groups = [
            {"params": decay, "weight_decay": settings.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        table_params = [p for p in self.table_parameters() if p.requires_grad and id(p) not in fused]
        if table_params:
            tables_config = self.over_encoding or self.frequent_ngrams
            groups.append({
                "params": table_params,
                "weight_decay": tables_config.table_weight_decay,
                "lr": tables_config.table_lr if tables_config.table_lr is not None else settings.lr,
            })
        optimizer = torch.optim.AdamW(groups, lr=settings.lr, betas=tuple(settings.betas))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(settings.warmup_steps, total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: cosine_with_warmup(step, warmup, total, settings.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

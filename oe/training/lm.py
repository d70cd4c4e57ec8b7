"""The LightningModule shared by every model kind: baseline and Over-Encoding.

The kinds differ only in the input embedding, chosen by ``over_encoding`` (None: the
baseline). Training, validation, optimisation and logging are written once here.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import lightning as L
import torch
import torch.nn.functional as F

from oe.models.embedding import OverEncoding, OverEncodingConfig, TokenEmbedding
from oe.models.frequent_ngrams import FrequentNgramConfig, FrequentNgramEmbedding
from oe.models.heads import HeadLoss, OutputHeads, OutputHeadsConfig, total_loss
from oe.models.gpt import GPT, BackboneConfig
from oe.distributed.parallelize import TablePlan, parallelize, sharded_collections, table_parameter_names
from oe.distributed.strategy import ShardedTableStrategy
from oe.models.pretrained import freeze_all_but_ngrams, load_gpt2_weights, pretrained_backbone

IGNORE_INDEX = -100


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


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the non-ignored targets, and their number."""
    loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="sum",
    )
    return loss, int((targets != IGNORE_INDEX).sum())


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
        if vocab_size < 2:
            raise ValueError(f"model.vocab_size must be >= 2, got {vocab_size}")
        if optimizer.warmup_steps < 0 or optimizer.lr <= 0:
            raise ValueError("model.optimizer.lr must be > 0 and warmup_steps >= 0")
        self.save_hyperparameters()
        if over_encoding is not None and frequent_ngrams is not None:
            raise ValueError("set model.over_encoding or model.frequent_ngrams, not both")
        if pretrained is not None:
            backbone = pretrained_backbone(pretrained, backbone, vocab_size)
            # A checkpoint of this model rebuilds the same shape without the source (the CLI
            # records configs as mappings, a direct call as dataclasses).
            given = self.hparams.get("backbone")
            self.hparams["backbone"] = asdict(backbone) if isinstance(given, dict) else backbone
        self.frequent_ngrams = frequent_ngrams
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.backbone_config = backbone
        self.over_encoding = over_encoding
        self.optimizer_config = optimizer
        if frequent_ngrams is not None:
            embedding = FrequentNgramEmbedding(vocab_size, backbone.n_embd, frequent_ngrams, pad_id)
        elif over_encoding is None:
            embedding = TokenEmbedding(vocab_size, backbone.n_embd)
        else:
            embedding = OverEncoding(vocab_size, backbone.n_embd, over_encoding, pad_id)
        self.model = GPT(backbone, embedding, vocab_size)
        if pretrained is not None:
            load_gpt2_weights(self.model, pretrained)
            if isinstance(embedding, FrequentNgramEmbedding):
                embedding.reset_ngram_tables()  # rows start from the loaded 1-gram table
        if freeze_backbone:
            freeze_all_but_ngrams(self.model)
        self.heads_config = heads
        self.heads = (None if heads is None or heads.empty
                      else OutputHeads(heads, backbone, vocab_size, pad_id))
        self._last_step_time: float | None = None

    @property
    def kind(self) -> str:
        heads = "" if self.heads is None else "+" + self.heads_config.kind
        if self.frequent_ngrams is not None:
            return "frequent" + "".join(str(n) for n in [1, *sorted(self.frequent_ngrams.orders)]) + heads
        if self.over_encoding is None:
            return "baseline" + heads
        return "oe" + "".join(str(n) for n in [1, *sorted(self.over_encoding.orders)]) + heads

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
            return (*next_token_loss(self(inputs, doc_ids), targets), [])
        # The extra heads read the very hidden states and input embeddings of the main path.
        embedded = self.model.embedding(inputs, doc_ids)
        hidden = self.model.hidden(embedded)
        loss_sum, n_tokens = next_token_loss(self.model.logits(hidden), targets)
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
        embedding = self.model.embedding
        return embedding.table_parameters() if hasattr(embedding, "table_parameters") else []

    def configure_model(self) -> None:
        # Training shards the Over-Encoding tables row-wise over all ranks (one rank too) with
        # their optimiser fused into the backward pass (oe.distributed.parallelize); DDP leaves them alone.
        # Outside fit (evaluation, generation) the plain tables serve.
        if self.over_encoding is None or self._trainer is None or self.trainer.state.fn != "fit":
            return
        if not self.over_encoding.shard_tables:
            return
        oe = self.over_encoding
        plan = TablePlan(
            optimizer=oe.table_optimizer,
            lr=oe.table_lr if oe.table_lr is not None else self.optimizer_config.lr,
            weight_decay=oe.table_weight_decay, seed=self.model.embedding.table_seed,
            init_std=oe.init_std, betas=tuple(self.optimizer_config.betas),
        )
        if self.trainer.checkpoint_callbacks and not isinstance(self.trainer.strategy,
                                                                ShardedTableStrategy):
            raise ValueError(
                "sharded n-gram tables are checkpointed only by trainer.strategy "
                "oe.distributed.strategy.ShardedTableStrategy (the OE configs' default); with "
                f"{type(self.trainer.strategy).__name__} the table optimiser state (and on several "
                "ranks, other ranks' rows) would be lost. Set that strategy, or "
                "model.over_encoding.shard_tables false for small tables"
            )
        parallelize(self.model.embedding, plan, self.device)
        self._ddp_params_and_buffers_to_ignore = table_parameter_names(self)

    def configure_optimizers(self):
        cfg = self.optimizer_config
        tables = {id(p) for p in self.table_parameters()}
        fused = {id(p) for c in sharded_collections(self).values() for p in c.parameters()}
        dense = [p for p in self.parameters() if p.requires_grad and id(p) not in tables]
        decay = [p for p in dense if p.dim() >= 2]
        no_decay = [p for p in dense if p.dim() < 2]
        groups = [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        table_params = [p for p in self.table_parameters() if p.requires_grad and id(p) not in fused]
        if table_params:
            oe = self.over_encoding or self.frequent_ngrams
            groups.append({
                "params": table_params,
                "weight_decay": oe.table_weight_decay,
                "lr": oe.table_lr if oe.table_lr is not None else cfg.lr,
            })
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(cfg.warmup_steps, total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: cosine_with_warmup(step, warmup, total, cfg.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

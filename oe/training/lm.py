"""The LightningModule shared by every model kind: baseline and Over-Encoding.

The kinds differ only in the input embedding, chosen by ``over_encoding`` (None: the
baseline). The model's settings are ``oe.models.config.ModelConfig``'s fields (taken as keywords
beside the optimiser, so a config's ``model`` section stays flat), the network comes from
``oe.models.build.build_model`` and the tables' sharding from
``oe.training.sharding`` (through ``oe.distributed.parallelize``); training, validation,
optimisation and logging are written once here.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import lightning as L
import torch

from oe.distributed.checkpoint import record_special_tokens, record_tokenizer
from oe.distributed.parallelize import (set_table_lr, sharded_collections, table_betas, table_lr,
                                        table_optimizer)
from oe.models.build import build_model, table_parameters
from oe.models.config import ModelConfig
from oe.models.gpt import Memory, memory_rows
from oe.models.heads import HeadLoss, shifted_targets
from oe.models.losses import IGNORE_INDEX, summed_cross_entropy
from oe.training.sharding import shard_tables_for_fit


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


TOKENS_SEEN_KEY = "tokens_seen"  # the checkpoint's count of target tokens trained on
SCHEDULE_STEPS_KEY = "schedule_steps"  # the checkpoint's length of its cosine schedule, in steps


class ScheduleChangedError(ValueError):
    """A resumed run whose schedule would have another length than its checkpoint's."""


@runtime_checkable
class KnownLossFloor(Protocol):
    """Data whose generating process is known exactly (cfg3f), so the least reachable loss is."""

    def validation_loss_floor(self) -> float:
        """Nats per predicted token that a perfect model would score on the validation set."""
        ...


class LanguageModel(L.LightningModule):
    """A GPT-2 language model; Over-Encoding when ``over_encoding`` is given.

    Args:
        optimizer: dense optimiser and schedule.
        **settings: the model's settings, the fields of ``oe.models.config.ModelConfig``
            (vocab_size, pad_id, backbone, over_encoding, heads, frequent_ngrams, pretrained,
            freeze_backbone); LightningCLI reads them from the ``ModelConfig(**settings)`` call
            below, so a config's ``model`` section lists them beside ``optimizer``.
    """

    def __init__(self, *, optimizer: OptimizerConfig = OptimizerConfig(), **settings: Any) -> None:
        super().__init__()
        if optimizer.warmup_steps < 0 or optimizer.lr <= 0:
            raise ValueError("model.optimizer.lr must be > 0 and warmup_steps >= 0")
        config = ModelConfig(**settings)
        # Every setting is recorded, defaults included, as a checkpoint's hyper-parameters:
        # save_hyperparameters reads ``settings`` from this frame (under LightningCLI it
        # records the parsed section instead).
        settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        self.save_hyperparameters()
        built = build_model(config)
        if config.pretrained is not None:
            # A checkpoint of this model rebuilds the same shape without the source (the CLI
            # records configs as mappings, a direct call as dataclasses).
            given = self.hparams.get("backbone")
            self.hparams["backbone"] = asdict(built.backbone) if isinstance(given, dict) else built.backbone
        self.model_config = config
        self.vocab_size = config.vocab_size
        self.pad_id = config.pad_id
        self.backbone_config = built.backbone
        self.over_encoding = config.over_encoding
        self.frequent_ngrams = config.frequent_ngrams
        self.heads_config = config.heads
        self.optimizer_config = optimizer
        self.model = built.gpt
        self.heads = built.heads
        self._last_step_time: float | None = None
        self._sgd_tables: list[torch.nn.Parameter] = []
        self._loss_floor: float | None = None
        self._tokens_seen = 0
        self._table_lr = 0.0
        self._schedule_steps: int | None = None  # this run's schedule length (configure_optimizers)
        self._resumed_schedule_steps: int | None = None  # the checkpoint's, when resumed

    @property
    def kind(self) -> str:
        return self.model_config.kind

    def forward(self, tokens: torch.Tensor, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(tokens, doc_ids)

    def _pass(self, ids: torch.Tensor, row_doc_ids: torch.Tensor | None, isolate: bool,
              embedded: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, torch.Tensor,
                                                                list[HeadLoss]]:
        """Summed next-token loss of rows ``ids`` from their input embeddings ``embedded`` (and
        the memory of inner blocks), its number of targets, and the extra heads' losses."""
        doc_ids = None if row_doc_ids is None or not isolate else row_doc_ids[:, :-1]
        hidden = self.model.hidden(embedded, doc_ids=doc_ids, memory=memory)
        # Next-token targets; with ``isolate``, none in another document (EOS -> next BOS).
        targets = shifted_targets(ids, 1, self.pad_id, row_doc_ids if isolate else None)
        loss_sum, n_tokens = summed_cross_entropy(self.model.logits(hidden), targets)
        if self.heads is None:
            return loss_sum, n_tokens, []
        # The extra heads read the very hidden states and input embeddings of the main path.
        return loss_sum, n_tokens, self.heads.losses(hidden, embedded, ids, self.model.logits,
                                                      row_doc_ids, isolate_documents=isolate)

    @staticmethod
    def _unpack(batch: dict) -> tuple[torch.Tensor, torch.Tensor | None, bool, list[slice]]:
        """Rows, their document ids, whether documents are isolated, and the micro-batches."""
        ids = batch["input_ids"]
        rows = int(batch.get("micro_batch_rows") or ids.shape[0])
        parts = [slice(start, start + rows) for start in range(0, ids.shape[0], rows)]
        return ids, batch.get("doc_ids"), bool(batch.get("isolate_documents", False)), parts

    def _embed(self, ids: torch.Tensor, row_doc_ids: torch.Tensor | None
               ) -> tuple[torch.Tensor, Memory]:
        return self.model.embed(ids[:, :-1], None if row_doc_ids is None else row_doc_ids[:, :-1])

    def _loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, list[HeadLoss]]:
        """Summed next-token loss of the whole batch in one pass, its number of targets, and the
        extra heads' losses."""
        ids, row_doc_ids, isolate, _ = self._unpack(batch)
        return self._pass(ids, row_doc_ids, isolate, *self._embed(ids, row_doc_ids))

    def _target_counts(self, ids: torch.Tensor, row_doc_ids: torch.Tensor | None,
                       isolate: bool) -> torch.Tensor:
        """Counted targets of the next-token head and of each extra head (in ``losses`` order),
        float64 on the batch's device (no host synchronisation)."""
        next_token = shifted_targets(ids, 1, self.pad_id, row_doc_ids if isolate else None)
        counts = [(next_token != IGNORE_INDEX).sum()]
        if self.heads is not None:
            length = ids.shape[1] - 1
            config = self.heads.config
            for offset in list(config.od_offsets) + ([2] if config.mtp else []):
                if offset > length:  # rows too short: no target that far ahead
                    counts.append(counts[0].new_zeros(()))
                    continue
                targets = shifted_targets(ids, offset, self.pad_id, row_doc_ids)
                counts.append((targets != IGNORE_INDEX).sum())
        return torch.stack(counts).double()

    def _global_sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.trainer.world_size == 1:
            return values
        return self.trainer.strategy.reduce(values, reduce_op="sum")

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer) -> None:
        # Gradients are zeroed at the start of training_step: its micro-batches accumulate
        # theirs before Lightning's backward of the last one (Lightning zeroes in between).
        pass

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """One optimiser step on a global batch, in micro-batches with gradient accumulation.

        Each micro-batch's loss is divided by the target count of the whole global batch (all
        ranks; DDP's gradient average is undone by the world size), so the accumulated gradient
        is the one of the whole batch. The input embedding runs once for the rank's whole share:
        earlier micro-batches run the backbone on a detached copy and leave the embedding's
        gradient on it; the returned objective adds it to the last micro-batch's loss, so the
        embedding's backward (and a fused table optimiser's update) happens once per step.
        """
        if self.trainer.accumulate_grad_batches != 1:
            raise ValueError("trainer.accumulate_grad_batches must be 1: a global batch is split "
                             "into micro-batches by data.micro_batch_tokens")
        ids, row_doc_ids, isolate, parts = self._unpack(batch)
        if len(parts) > 1 and getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            raise ValueError("trainer.precision 16-mixed (a gradient scaler) cannot accumulate "
                             "micro-batches: use bf16-mixed or 32-true, or raise "
                             "data.micro_batch_tokens to hold the whole batch")
        objective, counts, sums, weights, names = self._step_objective(ids, row_doc_ids, isolate,
                                                                       parts)
        # Counts and sums stay tensors on the device: the step itself never waits for the host
        # (Lightning reads logged values when it logs, at log_every_n_steps).
        means = self._global_sum(sums) / counts.clamp(min=1)
        n_tokens = counts[0]
        self._tokens_seen = self._tokens_seen + n_tokens
        # Target tokens of every rank so far: the axis on which kinds compare at equal data.
        self.log("train/tokens", self._tokens_seen, reduce_fx="max")
        self.log("train/loss", means[0], prog_bar=True)
        if names:  # train/loss stays the next-token loss, comparable across model kinds
            for name, mean in zip(names, means[1:]):
                self.log(f"train/loss_{name}", mean)
            self.log("train/loss_total", sum(w * m for w, m in zip(weights, means)))
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=False)
        now = time.perf_counter()
        if self._last_step_time is not None:  # target tokens of the global batch per second
            self.log("train/tokens_per_s", n_tokens / (now - self._last_step_time), prog_bar=True)
        self._last_step_time = now
        return objective

    def _step_objective(self, ids: torch.Tensor, row_doc_ids: torch.Tensor | None, isolate: bool,
                        parts: list[slice]):
        """The backward objective of one step over micro-batches ``parts`` (earlier ones already
        backpropagated), the global target counts, this rank's summed losses, the heads' weights
        and names. No host synchronisation: every count and scale stays on the device."""
        world = self.trainer.world_size
        counts = self._global_sum(self._target_counts(ids, row_doc_ids, isolate))
        # float32, as the Python floats they once were: the same rounding, the same numbers.
        scales = (counts.clamp(min=1) / world).float()
        self.zero_grad(set_to_none=True)
        embedded, memory = self._embed(ids, row_doc_ids)
        # Earlier micro-batches run on detached copies of the embedding's outputs (the input and
        # each inner block's memory); their gradients are handed back below in one term.
        outputs = [embedded, *memory.values()]
        leaves = [t.detach().requires_grad_() for t in outputs] if len(parts) > 1 else outputs
        sums, weights, names = [], [], []
        objective = embedded.new_zeros(())
        for index, rows in enumerate(parts):
            last = index == len(parts) - 1
            x, *values = outputs if last else leaves
            loss_sum, _, extra = self._pass(ids[rows], None if row_doc_ids is None else row_doc_ids[rows],
                                            isolate, x[rows], memory_rows(dict(zip(memory, values)), rows))
            terms = [loss_sum, *(head.loss_sum for head in extra)]
            weights = [1.0, *(head.weight for head in extra)]
            names = [head.name for head in extra]
            part_objective = sum(w * t / n for w, t, n in zip(weights, terms, scales))
            sums.append(torch.stack([t.detach().float() for t in terms]))
            if last:
                objective = part_objective
            else:
                part_objective.backward()
        if len(parts) > 1:
            before = parts[-1].start
            for output, leaf in zip(outputs, leaves):
                if leaf.grad is not None:
                    objective = objective + (output[:before] * leaf.grad[:before]).sum()
        return objective, counts, torch.stack(sums).sum(0).double(), weights, names

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        ids, row_doc_ids, isolate, parts = self._unpack(batch)
        embedded, memory = self._embed(ids, row_doc_ids)  # once per batch, as in training
        loss_sum, n_tokens, heads = 0.0, 0, {}
        for rows in parts:
            part_sum, part_count, extra = self._pass(
                ids[rows], None if row_doc_ids is None else row_doc_ids[rows], isolate,
                embedded[rows], memory_rows(memory, rows))
            loss_sum, n_tokens = loss_sum + part_sum, n_tokens + part_count
            for head in extra:
                total, count = heads.get(head.name, (0.0, 0))
                heads[head.name] = (total + head.loss_sum, count + int(head.count))
        n_tokens = int(n_tokens)  # once per validation batch, for the epoch's weighted mean
        self.log("val/loss", loss_sum / max(n_tokens, 1), batch_size=n_tokens, sync_dist=True,
                 prog_bar=True)
        if self._loss_floor is not None:
            # Averaged like val/loss over the epoch, so that it is exactly val/loss - floor.
            self.log("val/excess_loss", loss_sum / max(n_tokens, 1) - self._loss_floor,
                     batch_size=n_tokens, sync_dist=True)
            self.log("val/loss_floor", self._loss_floor, batch_size=n_tokens, sync_dist=True)
        for name, (total, count) in heads.items():
            self.log(f"val/loss_{name}", total / max(count, 1), batch_size=max(count, 1),
                     sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self._last_step_time = None  # validation time is not training throughput
        data = self.trainer.datamodule
        if self._loss_floor is None and isinstance(data, KnownLossFloor):
            self._loss_floor = data.validation_loss_floor()  # once: the sentences never change

    def table_parameters(self) -> list[torch.nn.Parameter]:
        return table_parameters(self.model)

    def configure_model(self) -> None:
        shard_tables_for_fit(self, self._trainer)  # the tables' sharding: oe.training.sharding

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        record_tokenizer(checkpoint, self.trainer.datamodule)  # what evaluation reads it with
        record_special_tokens(checkpoint, self.trainer.datamodule)  # an export's BOS/EOS/pad
        checkpoint[TOKENS_SEEN_KEY] = int(self._tokens_seen)
        if self._schedule_steps is not None:
            checkpoint[SCHEDULE_STEPS_KEY] = self._schedule_steps

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._tokens_seen = int(checkpoint.get(TOKENS_SEEN_KEY, 0))
        self._resumed_schedule_steps = checkpoint.get(SCHEDULE_STEPS_KEY)

    def on_train_start(self) -> None:
        self.check_resumed_schedule()

    def check_resumed_schedule(self) -> None:
        """Refuse a resumed run whose cosine schedule would have another length than its
        checkpoint's (a changed ``trainer.max_steps``, or data of another length): the
        learning rate would jump at the resume and the decay change its course."""
        saved, ours = self._resumed_schedule_steps, self._schedule_steps
        if saved is None or ours is None or saved == ours:
            return
        settings, step = self.optimizer_config, self.trainer.global_step
        lr_then, lr_now = (settings.lr * cosine_with_warmup(step, min(settings.warmup_steps, total),
                                                            total, settings.min_lr_ratio)
                           for total in (saved, ours))
        raise ScheduleChangedError(
            f"checkpoint {self.trainer.ckpt_path} was trained on a cosine schedule of {saved} "
            f"steps; this run's would take {ours} (--trainer.max_steps, or the data's length "
            f"when it is -1), so the learning rate would jump from {lr_then:.3g} to {lr_now:.3g} "
            f"at step {step} and decay on another course: resume with --trainer.max_steps "
            f"{saved} (its data unchanged), or start a new run in another --run_dir"
        )

    def _table_lr_peak(self) -> float | None:
        """The tables' rate before the schedule's factor; None for a model without tables."""
        tables = self.over_encoding or self.frequent_ngrams
        if tables is None:
            return None
        return table_lr(tables, self.optimizer_config.lr)

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        # The tables follow the dense schedule on every path: AdamW's own group already does;
        # fused (sharded) and plain SGD tables are given this step's rate here.
        peak = self._table_lr_peak()
        if peak is None:
            return
        group = self.trainer.optimizers[0].param_groups[0]
        self._table_lr = peak * group["lr"] / group["initial_lr"]
        set_table_lr(self, self._table_lr)
        self.log("train/lr_tables", self._table_lr)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        with torch.no_grad():  # plain tables with sgd: outside AdamW, like a fused SGD
            for p in self._sgd_tables:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-self._table_lr)
                    p.grad = None

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
        plain_sgd = (self.over_encoding is not None and not self.over_encoding.shard_tables
                     and table_optimizer(self.over_encoding) == "sgd")
        self._sgd_tables = table_params if plain_sgd else []
        if table_params and not plain_sgd:
            tables_config = self.over_encoding or self.frequent_ngrams
            groups.append({"params": table_params, "weight_decay": tables_config.table_weight_decay,
                           "lr": self._table_lr_peak(),
                           "betas": table_betas(tables_config, settings.betas)})
        optimizer = torch.optim.AdamW(groups, lr=settings.lr, betas=tuple(settings.betas))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        self._schedule_steps = total
        warmup = min(settings.warmup_steps, total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: cosine_with_warmup(step, warmup, total, settings.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

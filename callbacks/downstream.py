"""Zero-shot HellaSwag / PIQA / StoryCloze at the end of validation, scored as ``oe.evaluation.scoring`` does."""

from __future__ import annotations

import math

import lightning as L
import torch

from callbacks.schedule import EveryNValidations
from lightning.pytorch.utilities import rank_zero_warn

from oe.evaluation.scoring import (build_requests, empty_choices, eot_id_of, item_correct,
                                   loglikelihoods, share_stderr)
from oe.evaluation.tasks import TASKS, load_items
from oe.training.stops import stop_requested


class DownstreamEvaluation(EveryNValidations):
    """Every ``every_n_validations`` validations, score the tasks and log acc and acc_norm.

    The items are split over the ranks and the counts summed. Logs ``downstream/<task>/acc``,
    ``.../acc_norm`` and their standard errors.

    Args:
        tasks: task names (see ``oe.evaluation.tasks.TASKS``); None: hellaswag and piqa.
        data_dir: read ``<data_dir>/<task>.jsonl`` instead of the hub.
        limit: first N items per task (None: the full validation set).
        batch_size: sequences per forward pass.
        every_n_validations: run on every n-th validation (1: each one).
        tokenizer: tokenizer source; None: the data module's ``tokenizer``.
    """

    def __init__(self, tasks: list[str] | None = None, data_dir: str | None = None,
                 limit: int | None = None, batch_size: int = 32, every_n_validations: int = 1,
                 tokenizer: str | None = None) -> None:
        super().__init__(every_n_validations)
        tasks = ["hellaswag", "piqa"] if tasks is None else tasks
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks:
            raise ValueError(f"DownstreamEvaluation.tasks: unknown {unknown}; choose from {', '.join(TASKS)}")
        if every_n_validations < 1 or batch_size < 1 or (limit is not None and limit < 1):
            raise ValueError("DownstreamEvaluation: every_n_validations, batch_size and limit must be >= 1")
        self.tasks = list(tasks)
        self.data_dir = data_dir
        self.limit = limit
        self.batch_size = batch_size
        self.tokenizer_source = tokenizer
        self._items: dict[str, list] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Load (and so check) the data before training starts, not at the first validation.
        for task in self.tasks:
            self._items[task] = load_items(task, self.data_dir, self.limit)
            for line in empty_choices(self._items[task]):
                rank_zero_warn(f"DownstreamEvaluation: {task}: {line}; scored by the harness's "
                               "rule (never the acc_norm choice)")

    def _tokenizer(self, trainer: L.Trainer):
        if self.tokenizer_source is not None:
            from oe.tokenizer import load_tokenizer

            return load_tokenizer(self.tokenizer_source)
        tokenizer = getattr(trainer.datamodule, "tokenizer", None)
        if tokenizer is None:
            raise ValueError("DownstreamEvaluation needs a tokenizer: the data module has none; "
                             "set DownstreamEvaluation.tokenizer")
        return tokenizer

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.due(trainer):
            return
        tokenizer = self._tokenizer(trainer)
        eot = eot_id_of(tokenizer)
        rank, world = trainer.global_rank, trainer.world_size
        for task in self.tasks:
            if stop_requested(trainer):  # a stop signal: the tasks left are not scored
                return
            items = self._items[task][rank::world]
            requests = build_requests(items, tokenizer, eot)
            # Every rank makes as many forward passes as the busiest one (sharded tables'
            # lookups are collective calls).
            per_rank = [sum(len(i.choices) for i in self._items[task][r::world]) for r in range(world)]
            batches = max(math.ceil(n / self.batch_size) for n in per_rank)
            scores = loglikelihoods(pl_module.model, requests, self.batch_size, pad_id=eot,
                                    min_batches=batches)
            acc, acc_norm = item_correct(items, requests, scores)
            totals = torch.tensor([acc.sum(), acc_norm.sum(), len(acc)], dtype=torch.float64,
                                  device=pl_module.device)
            if world > 1:
                totals = pl_module.all_gather(totals).reshape(-1, 3).sum(0)
            n = float(totals[2])
            for name, hits in (("acc", float(totals[0])), ("acc_norm", float(totals[1]))):
                pl_module.log(f"downstream/{task}/{name}", hits / n, rank_zero_only=True)
                pl_module.log(f"downstream/{task}/{name}_stderr", share_stderr(hits, n),
                              rank_zero_only=True)

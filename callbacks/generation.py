"""Generation accuracy on cfg3f: sample from BOS, parse, report the share the grammar accepts."""

from __future__ import annotations

import time
from collections.abc import Callable

import lightning as L
import numpy as np
import torch

from callbacks.schedule import EveryNValidations
from datamodules.cfg import BOS_ID, EOS_ID
from oe.cfg import MAX_LENGTH, accepts_padded
from oe.cfg.inside import viable_prefix_length
from oe.models.decoding import sample_from_bos
from oe.training.stops import stop_requested


class GenerationAccuracy(EveryNValidations):
    """Every ``every_n_validations`` validations, sample ``num_samples`` sentences and parse them.

    Sampling uses the raw next-token distribution (temperature 1, no top-k or top-p) from BOS
    until EOS or 729 symbols, batched with the key/value cache; the samples are split over the
    ranks. Logs ``val/gen_acc`` (share accepted), ``val/gen_length`` (mean symbols), graded
    progress below full validity: ``val/gen_viable_frac`` (mean share of a sample, up to its
    first error, that some cfg3f sentence begins with) and ``val/gen_first_error`` (mean position
    of the first symbol no sentence allows; the length where there is none),
    ``val/gen_seconds`` and ``val/gen_sentences_per_s`` (its wall time, so that its share of a
    run shows; ``every_n_validations`` spaces it out) and, on W&B, a table of a few samples.

    Args:
        num_samples: sentences sampled in total (the paper: 10,000).
        every_n_validations: run on every n-th validation (1: each one).
        batch_size: rows generated together.
        seed: the sampling generator's seed (offset by rank and validation count).
        log_samples: how many samples go into the W&B table.
    """

    def __init__(self, num_samples: int = 10_000, every_n_validations: int = 1,
                 batch_size: int = 500, seed: int = 1234, log_samples: int = 8) -> None:
        super().__init__(every_n_validations)
        if num_samples < 1 or every_n_validations < 1 or batch_size < 1:
            raise ValueError("GenerationAccuracy: num_samples, every_n_validations and "
                             "batch_size must be >= 1")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.log_samples = log_samples

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.due(trainer):
            return
        share = self.num_samples // trainer.world_size + (
            trainer.global_rank < self.num_samples % trainer.world_size
        )
        generator = torch.Generator(device=pl_module.device)
        generator.manual_seed(self.seed + 1_000_003 * self._validations + trainer.global_rank)
        # Sharded n-gram lookups are collective: every rank samples the same number of rows, in
        # the same batches, for as many steps as the slowest rank; surplus rows are dropped.
        most = -(-self.num_samples // trainer.world_size)
        started = time.perf_counter()
        # A stop signal ends the sampling within a decoding step; nothing partial is logged.
        def stopping() -> bool:  # collective: every rank asks at the same points
            return stop_requested(trainer)

        accepted, lengths, viable, samples = sample_and_check(
            pl_module.model, most, self.batch_size, generator,
            all_done=lambda done: (trainer.strategy.reduce_boolean_decision(done, all=True)
                                   or stopping()),
            stop=stopping,
        )
        if stopping():
            return
        seconds = time.perf_counter() - started
        accepted, lengths, viable, samples = (accepted[:share], lengths[:share], viable[:share],
                                              samples[:share])
        device = pl_module.device
        totals = torch.tensor([accepted.sum(), len(accepted), lengths.sum(), viable.sum(),
                               (viable / np.maximum(lengths, 1)).sum()],
                              dtype=torch.float64, device=device)
        if trainer.world_size > 1:
            totals = pl_module.all_gather(totals).reshape(-1, len(totals)).sum(0)
        n = float(totals[1])
        pl_module.log("val/gen_acc", float(totals[0]) / n, rank_zero_only=True)
        pl_module.log("val/gen_length", float(totals[2]) / n, rank_zero_only=True)
        pl_module.log("val/gen_first_error", float(totals[3]) / n, rank_zero_only=True)
        pl_module.log("val/gen_viable_frac", float(totals[4]) / n, rank_zero_only=True)
        pl_module.log("val/gen_seconds", seconds, rank_zero_only=True)
        pl_module.log("val/gen_sentences_per_s", float(totals[1]) / seconds, rank_zero_only=True)
        if trainer.is_global_zero:
            self._log_table(trainer, samples[: self.log_samples], accepted[: self.log_samples])

    def _log_table(self, trainer: L.Trainer, samples: list[str], accepted: np.ndarray) -> None:
        for logger in trainer.loggers:
            if hasattr(logger, "log_text"):
                logger.log_text(
                    key="val/gen_samples", columns=["step", "valid", "length", "sentence"],
                    data=[[trainer.global_step, bool(ok), len(s), s]
                          for s, ok in zip(samples, accepted)],
                )


@torch.no_grad()
def sample_and_check(model, num_samples: int, batch_size: int, generator: torch.Generator,
                     all_done: Callable[[bool], bool] = bool,
                     stop: Callable[[], bool] = lambda: False,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Sample sentences from ``model`` and parse them.

    Returns ``(accepted [N] bool, lengths [N], viable [N], texts)``: ``viable`` is the length of
    the longest prefix of each sample that some cfg3f sentence begins with. A sample that
    reaches 729 symbols without EOS, or that holds a non-terminal token, is rejected.
    ``all_done``: as in ``oe.models.decoding.decode``. ``stop``: asked before each batch; True
    ends the sampling with the batches done so far.
    """
    was_training = model.training
    model.eval()
    accepted, lengths, viable, texts = [], [], [], []
    try:
        for start in range(0, num_samples, batch_size):
            if stop():
                break
            rows = min(batch_size, num_samples - start)
            tokens, length = sample_from_bos(model, rows, BOS_ID, EOS_ID, MAX_LENGTH + 1,
                                             generator, all_done=all_done)
            tokens, length = tokens.cpu().numpy(), length.cpu().numpy()
            ended = length <= MAX_LENGTH
            ok = accepts_padded(tokens, np.minimum(length, MAX_LENGTH)) & ended
            accepted.append(ok)
            lengths.append(length)
            viable.append(viable_prefix_length([tokens[r, : length[r]] for r in range(rows)]))
            texts += ["".join(str(t) for t in tokens[r, : length[r]]) for r in range(rows)]
    finally:
        model.train(was_training)
    if not accepted:
        return np.zeros(0, bool), np.zeros(0, np.int64), np.zeros(0, np.int64), texts
    return np.concatenate(accepted), np.concatenate(lengths), np.concatenate(viable), texts

"""The training progress bar, counted to ``trainer.max_steps``.

The configs run one Lightning epoch (``max_epochs: 1``) over a stream that makes ``data.epochs``
passes, so Lightning's bar counts every batch of the stream: a 30-step run on the Wikitext quick
preset showed ``30/1580`` and three hours left. Lightning caps the count at the steps left only
when ``max_epochs`` is -1; this bar always does, so its count and time left are those of the run.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback, ProgressBar, RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE


def batches_to_run(trainer) -> int | float:
    """The batches this epoch will run: its batches, or fewer when ``max_steps`` ends it first
    (counting the batches a resumed epoch has already run, which the bar shows as done)."""
    total = trainer.num_training_batches
    if trainer.max_steps is None or trainer.max_steps < 0:
        return total
    done_in_epoch = trainer.fit_loop.epoch_loop.batch_progress.current.completed
    steps_left = max(trainer.max_steps - trainer.global_step, 0)
    return min(total, done_in_epoch + steps_left * trainer.accumulate_grad_batches)


class StepBoundedRichProgressBar(RichProgressBar):
    @property
    def total_train_batches(self) -> int | float:
        return batches_to_run(self.trainer)


class StepBoundedTQDMProgressBar(TQDMProgressBar):
    @property
    def total_train_batches(self) -> int | float:
        return batches_to_run(self.trainer)


def default_progress_bar(enable_progress_bar: bool | None,
                         callbacks: list[Callback]) -> ProgressBar | None:
    """The bar ``oe fit`` adds: none when the bar is off or a config names its own, else the one
    Lightning would pick (Rich where installed), counted to ``max_steps``."""
    if enable_progress_bar is False or any(isinstance(c, ProgressBar) for c in callbacks):
        return None
    return StepBoundedRichProgressBar() if _RICH_AVAILABLE else StepBoundedTQDMProgressBar()

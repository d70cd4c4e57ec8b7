"""oe.training.progress: the training bar counts to max_steps, not to the end of the stream."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.demos.boring_classes import BoringModel

from oe.training.progress import (StepBoundedRichProgressBar, StepBoundedTQDMProgressBar,
                                  batches_to_run, default_progress_bar)


class _Recorded(StepBoundedTQDMProgressBar):
    totals: list

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        if not self.totals:  # what the bar is drawn with (a resumed epoch asks for it here)
            self.totals.append((self.total_train_batches, self.train_progress_bar.total))


def _fit(tmp_path, max_steps, ckpt_path=None):
    bar = _Recorded()
    bar.totals = []
    every_3 = ModelCheckpoint(dirpath=tmp_path / "saves", every_n_train_steps=3, save_top_k=-1,
                              filename="{step}")
    trainer = L.Trainer(max_epochs=1, max_steps=max_steps, limit_train_batches=20,
                        callbacks=[bar, every_3], logger=False, enable_model_summary=False,
                        limit_val_batches=0, default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(BoringModel(), ckpt_path=ckpt_path)
    return trainer, bar.totals


def test_the_bar_counts_the_steps_the_run_will_take(tmp_path):
    trainer, totals = _fit(tmp_path, max_steps=4)
    assert totals == [(4, 4)]  # Lightning's own bar showed 20 (one epoch of the stream)
    assert batches_to_run(trainer) == 4  # 4 done in the epoch, none left
    _, resumed = _fit(tmp_path, max_steps=8, ckpt_path=tmp_path / "saves" / "step=3.ckpt")
    assert resumed[0][0] == 8  # 3 already done in this epoch (shown as done) + 5 to go
    _, whole = _fit(tmp_path, max_steps=-1)
    assert whole == [(20, 20)]


def test_oe_fit_adds_the_bar_unless_it_is_off_or_configured():
    assert default_progress_bar(False, []) is None
    assert default_progress_bar(None, [TQDMProgressBar()]) is None
    for enabled in (None, True):
        assert isinstance(default_progress_bar(enabled, []),
                          (StepBoundedRichProgressBar, StepBoundedTQDMProgressBar))

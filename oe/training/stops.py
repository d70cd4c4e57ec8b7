"""Clean stops: SIGTERM or SIGINT ends training at the next step boundary, with a checkpoint.

Without this, Lightning turns SIGTERM into a normal exit (status 0, nothing saved), losing up to a
checkpoint interval of steps, and Ctrl-C into an interrupted run without a checkpoint. Here the
first SIGTERM or SIGINT only sets a flag; at the end of the step in progress every rank agrees on
it (one all-reduce per step, so a signal that reaches one rank stops them all at the same step),
writes ``last.ckpt`` in the run's checkpoint folder (every rank's tables included) and stops,
without the validation Lightning would run on a stop. The run then writes no ``finished.json``
and exits with 128 + the signal's number.

The stop's save is the checkpoint callback's own "last" save: Lightning's end-of-training save
then has nothing left to write (it would otherwise fork ``last-v1.ckpt`` with the epoch marked
complete, which a resume takes for a finished run), and the resumed run's saves replace
``last.ckpt``. A validation in progress when the signal comes skips its long work
(``stop_requested``: generated samples, downstream tasks), so the stop takes seconds.

A second signal stops the process at once, without a checkpoint: after the first, SIGTERM and
SIGINT take their default action (which needs no Python code to run, so it acts even inside a
long step), and two signals that arrive before the first is handled are told apart through the
signal module's wakeup pipe, which gets a byte per signal where Python's handler runs once.

SIGUSR1 is left to Lightning (the SLURM requeue path: ``hpc_ckpt_N.ckpt`` and ``scontrol
requeue``); the SIGTERM SLURM sends afterwards is a clean stop like any other.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True)
class Stopped:
    """How a run stopped early: the signal, the step reached and the checkpoint written there."""

    signal_name: str
    global_step: int
    checkpoint: Path

    @property
    def exit_code(self) -> int:
        return 128 + signal.Signals[self.signal_name].value


def stop_checkpoint_path(trainer: L.Trainer) -> Path:
    """Where a clean stop saves: ``last.ckpt`` of the first ModelCheckpoint, else the run folder."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            return Path(callback.dirpath) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}.ckpt"
    return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"


class CleanStop(Callback):
    """Checkpoint and stop at the next step boundary after SIGTERM or SIGINT (every rank)."""

    def __init__(self) -> None:
        self.received: int | None = None  # the signal this process received, if any
        self.stopped: Stopped | None = None
        self._trainer: L.Trainer | None = None
        self._previous: dict[int, object] = {}
        self._pipe: tuple[int, int] | None = None
        self._previous_wakeup = -1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning's own handlers (registered when the run starts), which these replace
        # for SIGTERM and SIGINT.
        self._trainer = trainer
        self._pipe = os.pipe()
        for end in self._pipe:
            os.set_blocking(end, False)
        try:
            self._previous_wakeup = signal.set_wakeup_fd(self._pipe[1], warn_on_full_buffer=False)
        except ValueError:  # not the main thread: signals are not ours to handle
            self._close_pipe()
            return
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._receive)

    def _arrived(self) -> int:
        """How many stop signals reached the process since the last look (the wakeup pipe's)."""
        if self._pipe is None:
            return 0
        try:
            data = os.read(self._pipe[0], 4096)
        except BlockingIOError:
            return 0
        return sum(byte in STOP_SIGNALS for byte in data)

    def _receive(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None or self._arrived() > 1:  # asked twice: stop now
            self._forward(signum)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = signum
        self._forward(signum)
        for stop in STOP_SIGNALS:  # a second one ends the process at once, even mid-step
            signal.signal(stop, signal.SIG_DFL)

    def _forward(self, signum: int) -> None:
        # Ranks that Lightning started as child processes of this one hear of it from here
        # (under torchrun or srun every rank gets the signal itself).
        launcher = self._trainer.strategy.launcher if self._trainer is not None else None
        for process in getattr(launcher, "procs", []) or []:
            if process.poll() is None:
                process.send_signal(signum)

    def _close_pipe(self) -> None:
        for end in self._pipe or ():
            os.close(end)
        self._pipe = None

    def requested(self, trainer: L.Trainer) -> bool:
        """Whether some rank received a stop signal (collective: call it on every rank)."""
        return self._agreed_signal(trainer) is not None

    def _agreed_signal(self, trainer: L.Trainer) -> int | None:
        """The signal to stop for, the same on every rank: the largest any rank received."""
        received = self.received or 0
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            flag = torch.tensor([received], device=trainer.strategy.root_device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            received = int(flag.item())
        return received or None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs,
                           batch, batch_idx: int) -> None:
        if self.stopped is not None:
            return
        signum = self._agreed_signal(trainer)
        if signum is None:
            return
        path = stop_checkpoint_path(trainer)
        callback = _last_checkpoint_callback(trainer, path)
        if callback is not None:
            # Recorded in the checkpoint's callback state: the resumed run's saves replace it.
            callback.last_model_path = str(path)
        trainer.save_checkpoint(path)
        if callback is not None:
            # The callback now counts this save as its own: no second save at this step, and
            # none at the end of training (Lightning 2.6's record of what it saved).
            callback._last_global_step_saved = trainer.global_step
            callback._last_checkpoint_saved = str(path)
        self.stopped = Stopped(signal.Signals(signum).name, trainer.global_step, path)
        trainer.should_stop = True
        trainer.limit_val_batches = 0  # Lightning validates on a stop; that can take minutes

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._pipe is not None:
            signal.set_wakeup_fd(self._previous_wakeup)
            self._close_pipe()
        if self.received is None:  # after a stop a further signal keeps its default action
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
        self._previous.clear()


def _last_checkpoint_callback(trainer: L.Trainer, path: Path) -> ModelCheckpoint | None:
    """The ModelCheckpoint whose "last" file is ``path``, if any."""
    for callback in trainer.checkpoint_callbacks:
        if (isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath
                and Path(callback.dirpath) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}.ckpt" == path):
            return callback
    return None


def stop_requested(trainer: L.Trainer) -> bool:
    """Whether the run is stopping on a signal: long work in a callback (validation's samples,
    downstream tasks) checks this and gives up. Collective: call it on every rank alike."""
    stops = [c for c in trainer.callbacks if isinstance(c, CleanStop)]
    return bool(stops) and stops[0].requested(trainer)


def stop_message(stopped: Stopped, resume_hint: str) -> str:
    """The one line a stopped run ends with: where its checkpoint is and how to go on."""
    return (f"stopped by {stopped.signal_name} at step {stopped.global_step}: checkpoint "
            f"{stopped.checkpoint}; {resume_hint}")

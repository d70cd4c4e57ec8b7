"""Clean stops: SIGTERM or SIGINT ends training at the next step boundary, with a checkpoint.

Without this, Lightning turns SIGTERM into a normal exit (status 0, nothing saved), losing up to a
checkpoint interval of steps, and Ctrl-C into an interrupted run without a checkpoint. Here the
first SIGTERM or SIGINT only sets a flag; at the end of the step in progress every rank agrees on
it (one all-reduce per step, so a signal that reaches one rank stops them all at the same step),
writes ``last.ckpt`` in the run's checkpoint folder (every rank's tables included) and stops.
The run then writes no ``finished.json`` and exits with 128 + the signal's number. A second
signal stops the process at once, without a checkpoint.

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

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning's own handlers (registered when the run starts), which these replace
        # for SIGTERM and SIGINT.
        self._trainer = trainer
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._receive)

    def _receive(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:  # asked twice: stop now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = signum
        # Ranks that Lightning started as child processes of this one hear of it from here
        # (under torchrun or srun every rank gets the signal itself).
        launcher = self._trainer.strategy.launcher if self._trainer is not None else None
        for process in getattr(launcher, "procs", []) or []:
            if process.poll() is None:
                process.send_signal(signum)

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
        trainer.save_checkpoint(path)
        self.stopped = Stopped(signal.Signals(signum).name, trainer.global_step, path)
        trainer.should_stop = True

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def stop_message(stopped: Stopped, resume_hint: str) -> str:
    """The one line a stopped run ends with: where its checkpoint is and how to go on."""
    return (f"stopped by {stopped.signal_name} at step {stopped.global_step}: checkpoint "
            f"{stopped.checkpoint}; {resume_hint}")

"""What the ``oe`` tools print: quiet by default, everything with ``--verbose``.

Quiet means: the warnings and notices below, each known to be harmless in this project, are not
shown; every other warning and every error still is. ``--verbose`` (any ``oe`` tool, or
``OE_VERBOSE=1`` in the environment, which the runs a tool starts inherit) shows them all.

Known harmless, and why:
- Lightning's hint that ``srun`` exists but is not used: a run started without srun on a machine
  with SLURM installed is a local run on purpose (SLURM jobs start through srun).
- Lightning's tip to install ``litlogger``: an advertisement.
- ``isinstance(treespec, LeafSpec)`` is deprecated: inside Lightning, about a torch API.
- torch.fx's note that ``is_fx_tracing`` also covers torch.export: printed when a model is
  traced for the FLOPs count of the model summary; no code here asks either question.
- ``It is recommended to use self.log(..., sync_dist=True)`` for ``val/gen_*`` and
  ``downstream/*``: those callbacks gather their counts over the ranks themselves and log the
  total from rank 0 (``rank_zero_only``).
- ``Your IterableDataset has __len__ defined``: the data modules give each loader worker its own
  share of the stream (``get_worker_info``), which is what the warning asks for.
- The ``datasets`` library's per-split progress bars (``Generating train split``, ``Map``): the
  data is prepared in seconds and the bars repeat on every rank.
- ``The number of training batches (N) is smaller than the logging interval``: short test and
  smoke runs log less often than asked, which is what they are for.
- W&B's own start and end banners (``wandb: ...`` lines): the run folder and ``wandb sync`` are
  what matter, and ``oe`` prints where its runs go.
- Lightning's ``You're resuming from a checkpoint that ended before the epoch ended and your
  dataloader is not resumable``: the data modules keep their stream position in the checkpoint
  (their ``state_dict``) and start from it, so a resumed run reads the batches it would have read;
  ``tests/training/test_faults.py`` checks that resumed losses match bit for bit.
- torch's ``Please use DTensor instead and we are deprecating ShardedTensor``: TorchRec's
  row-wise sharded tables are ShardedTensors, and torch.distributed.checkpoint reads and writes
  them (each resume warns); the type is TorchRec's choice, not one this project can make.
- Lightning's ``weights_only was not set, defaulting to False`` on each save: a checkpoint here
  is whole on purpose (optimiser, schedule, loops and data position, for exact resumes).
- torch.distributed.checkpoint's ``torch.distributed is disabled, unavailable or uninitialized,
  assuming the intent is to load in a single process``: ``oe export``, ``oe evaluate`` and
  ``oe generate`` read a sharded checkpoint's table folder in one process on purpose (every
  rank's rows gathered into whole tables).
- Lightning's banner when a one-process group starts (``Initializing distributed: GLOBAL_RANK: 0,
  MEMBER: 1/1`` and ``distributed_backend=gloo ... Starting with 1 processes`` between two
  rules): every run with sharded tables uses the DDP-based ``ShardedTableStrategy``, so a run on
  one device starts a one-rank gloo group that has no other rank to wait for. With two or more
  processes the banner stays: it says that every rank has joined.
"""

from __future__ import annotations

import logging
import os
import re
import warnings

VERBOSE_FLAG = "--verbose"
VERBOSE_ENV = "OE_VERBOSE"

# (regular expression at the start of the message, where it comes from)
HARMLESS_WARNINGS = [
    (r"The `srun` command is available on your system but is not used", "lightning"),
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", "lightning"),
    (r"It is recommended to use `self\.log\('(val/gen_|downstream/)", "lightning"),
    (r"Your `IterableDataset` has `__len__` defined", "lightning"),
    (r"The number of training batches \(\d+\) is smaller than the logging interval", "lightning"),
    (r"You're resuming from a checkpoint that ended before the epoch ended and your dataloader "
     r"is not resumable", "lightning"),
    (r"Please use DTensor instead and we are deprecating ShardedTensor", "torch"),
    (r"torch\.distributed is disabled, unavailable or uninitialized, assuming the intent is to "
     r"load in a single process", "torch"),
]
HARMLESS_LOG_MESSAGES = ["For seamless cloud logging", "is_fx_tracing will return true",
                         "`weights_only` was not set, defaulting to `False`"]
# Lightning's banner of a process group, hidden for a group of one process only
HARMLESS_LOG_PATTERNS = [re.compile(r"^Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/1$"),
                         re.compile(r"All distributed processes registered\. Starting with 1 "
                                    r"processes\n")]


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def take_verbose_flag(argv: list[str]) -> list[str]:
    """``argv`` without ``--verbose``; when it was there, ``OE_VERBOSE=1`` for this process and
    the ones it starts."""
    if VERBOSE_FLAG in argv:
        os.environ[VERBOSE_ENV] = "1"
    return [a for a in argv if a != VERBOSE_FLAG]


class _DropHarmless(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (any(known in message for known in HARMLESS_LOG_MESSAGES)
                    or any(pattern.search(message) for pattern in HARMLESS_LOG_PATTERNS))


_DROP = _DropHarmless()
_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
            "torch.fx._symbolic_trace", "lightning.pytorch.trainer.connectors.checkpoint_connector",
            "lightning.fabric.utilities.distributed")


def quiet_known_warnings() -> None:
    """Hide the known harmless warnings and notices above; with ``--verbose``, show them again."""
    if verbose():
        warnings.filters[:] = [f for f in warnings.filters
                               if not (f[0] == "ignore" and f[1] is not None
                                       and any(f[1].pattern == p for p, _ in HARMLESS_WARNINGS))]
        for name in _LOGGERS:
            logging.getLogger(name).removeFilter(_DROP)
        return
    for pattern, _ in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in _LOGGERS:
        logging.getLogger(name).addFilter(_DROP)
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

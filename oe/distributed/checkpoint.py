"""Checkpoints of a model with n-gram tables: the file format and its checks.

A training checkpoint ``X.ckpt`` is Lightning's dense state (written by rank 0) plus, when the
tables are sharded, a table folder beside it: every rank's rows and their fused-optimiser state,
written with torch.distributed.checkpoint (DCP), which reshards on load. Its entry ``TABLE_KEY``
is the tables' signature (vocabulary, orders, k, moduli, widths, optimiser); a checkpoint is
loaded only into a model whose signature is the same.

Saving is atomic (``oe.training.strategy``): each save writes a table folder of its own,
``X.ckpt.tables.<step>.<id>``, and then ``X.ckpt`` under a temporary name, renamed over the
previous one once complete. ``X.ckpt`` names its folder (``TABLE_DIR_KEY``) and the folder names
the step it was written at (``PAIR_FILE``), so a load never pairs the rows of one step with the
weights of another. Checkpoints written before this scheme have their tables in ``X.ckpt.tables``.

This module is the file format: the entries, reading a file and checking its table folder
(``checkpoint_problem``: is it complete? a run resumes only from one that is), and what a failed
write means (``write_failure``). Lightning's writer of the file, made atomic, is
``oe.training.checkpoint_io``. The tables' signature and state are
``oe.distributed.table_state``; the export to one plain state dict (every table row, no
optimiser state) that loads in one process is ``oe.distributed.export``; ``oe.huggingface.load``
builds the network of any checkpoint of ``oe.cli.fit`` (plain or exported).

The tokenizer a model was trained with is recorded under ``TOKENIZER_KEY`` by the data module
that offers it (``TokenizerRecord``), so that evaluation reads text the same way.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.distributed.checkpoint as dcp

TABLE_KEY = "sharded_ngram_tables"  # the checkpoint's entry describing its tables
TOKENIZER_KEY = "tokenizer"  # the checkpoint's entry naming the tokenizer: TokenizerRecord
SPECIAL_TOKENS_KEY = "special_token_ids"  # the data's BOS, EOS and padding ids (an export's config)
TABLE_DIR_KEY = "table_dir"  # the checkpoint's entry naming its table folder (beside the file)
PAIR_FILE = "pair.json"  # in a table folder: the checkpoint file and step it was written for
MODEL_PREFIX = "model."  # the GPT's keys in the LightningModule's state dict


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what was expected."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint that could not be written; the previous one is kept."""


def write_failure(err: BaseException) -> str | None:
    """Why a write failed (``[Errno 28] No space left on device``), or None if ``err`` is no
    failed write (a full disk, a quota, a file size limit, a lost mount) but a bug.

    The OSError is looked for along the chain: ``torch.save``'s zip writer raises a
    ``RuntimeError`` ("unexpected pos ...") while handling it, and torch.distributed.checkpoint
    wraps each rank's failure in a ``CheckpointException``, which derives from BaseException.
    """
    chain: list[BaseException] = []
    pending: list[BaseException | None] = [err]
    while pending:
        current = pending.pop()
        if current is None or any(current is seen for seen in chain):
            continue
        chain.append(current)
        failures = getattr(current, "failures", None)
        if type(current).__name__ == "CheckpointException" and isinstance(failures, dict):
            pending += [f[0] if isinstance(f, tuple) else f for f in failures.values()]
        pending += [current.__cause__, current.__context__]
    for current in chain:  # the system's own reason first
        if isinstance(current, OSError):
            return str(current)
    for current in chain:
        if isinstance(current, RuntimeError) and "file write failed" in str(current):
            return first_line(current)
        if isinstance(current, RuntimeError) and "unexpected pos" in str(current):
            # the zip writer's own check: fewer bytes reached the file than it wrote
            return "the file was cut short while written (a full disk or a file size limit)"
    return None


def is_write_failure(err: BaseException) -> bool:
    """Whether ``err`` is a failed write, not a bug (``write_failure``)."""
    return write_failure(err) is not None


# -- reading a checkpoint file, with one clear error for each way it can be wrong -----------

def read_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint at ``path`` (on the CPU), or one CheckpointError naming the file.

    ``mmap``: map the tensors instead of reading them (for checks that look at the entries only).
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; expected a .ckpt file "
                              f"(a table folder is read through its .ckpt file)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); it was never written in full")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"checkpoint {path} is not a PyTorch checkpoint (not a torch.save "
                              f"zip archive): truncated, or another kind of file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except (EOFError, pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, OSError,
            AttributeError, ModuleNotFoundError) as err:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}): truncated or "
                              f"corrupt") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"checkpoint {path} is not a Lightning checkpoint (no state_dict); "
                              f"expected a checkpoint written by oe fit")
    return checkpoint


def read_fit_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """``read_checkpoint``, of a checkpoint that records the hyper-parameters its model is
    rebuilt from (one written by oe fit, or its export); one CheckpointError otherwise."""
    checkpoint = read_checkpoint(path, mmap)
    if "hyper_parameters" not in checkpoint:
        raise CheckpointError(f"checkpoint {path} records no hyper_parameters; expected a "
                              f"checkpoint written by oe fit")
    return checkpoint


def table_dir(checkpoint_path: str | Path, checkpoint: Mapping[str, Any] | None = None) -> Path:
    """Where the tables of checkpoint ``checkpoint_path`` live: the folder it records.

    ``checkpoint``: the checkpoint's entries when already read; otherwise the file is read (mapped)
    when it exists. Checkpoints that record no folder keep their tables in ``X.ckpt.tables``.
    """
    path = Path(checkpoint_path)
    if checkpoint is None and path.is_file():
        try:
            checkpoint = read_checkpoint(path, mmap=True)
        except CheckpointError:
            checkpoint = None
    recorded = checkpoint.get(TABLE_DIR_KEY) if checkpoint is not None else None
    return path.parent / recorded if recorded else Path(f"{path}.tables")


def check_table_files(path: str | Path, checkpoint: Mapping[str, Any]) -> Path:
    """The table folder of ``checkpoint`` (read from ``path``), checked complete and its own.

    One CheckpointError if the folder is missing, unfinished, written for another checkpoint or
    step, or a shard it lists is missing or shorter than recorded.
    """
    directory = table_dir(path, checkpoint)
    if not (directory / ".metadata").is_file():
        raise CheckpointError(f"checkpoint {path}: its table folder {directory} is missing or "
                              f"incomplete (no .metadata)")
    pair = directory / PAIR_FILE
    if TABLE_DIR_KEY in checkpoint:
        try:
            owner = json.loads(pair.read_text())
        except (OSError, ValueError) as err:
            raise CheckpointError(f"checkpoint {path}: its table folder {directory} has no "
                                  f"readable {PAIR_FILE} ({err})") from err
        # The folder's name is unique to one save, so its step is what must agree; the file
        # name it was written for is not checked (a copied or renamed file shares the folder).
        step = checkpoint.get("global_step")
        if not isinstance(owner, dict) or owner.get("global_step") != step:
            raise CheckpointError(f"checkpoint {path} is at step {step}, but its table folder "
                                  f"{directory} holds {owner}; the pair is mixed")
    try:
        metadata = dcp.FileSystemReader(str(directory)).read_metadata()
    except Exception as err:  # noqa: BLE001 -- whatever unpickling a damaged file raises
        raise CheckpointError(f"checkpoint {path}: the table index {directory / '.metadata'} "
                              f"cannot be read ({type(err).__name__}); the table folder is corrupt") from err
    needed: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        name = str(info.relative_path)
        needed[name] = max(needed.get(name, 0), int(info.offset) + int(info.length))
    for name, size in sorted(needed.items()):
        shard = directory / name
        if not shard.is_file():
            raise CheckpointError(f"checkpoint {path}: table shard {shard} is missing")
        if shard.stat().st_size < size:
            raise CheckpointError(f"checkpoint {path}: table shard {shard} is truncated "
                                  f"({shard.stat().st_size} bytes, {size} expected)")
    return directory


def checkpoint_problem(path: str | Path) -> str | None:
    """Why checkpoint ``path`` cannot be resumed from (its first problem), or None when it is
    complete: readable and, with sharded tables, its table folder whole and its own."""
    try:
        checkpoint = read_checkpoint(path, mmap=True)
        if TABLE_KEY in checkpoint:
            check_table_files(path, checkpoint)
    except CheckpointError as err:
        return str(err)
    return None


def load_table_files(state: dict[str, Any], path: str | Path, checkpoint: Mapping[str, Any]) -> None:
    """Fill ``state`` in place from the table folder of ``checkpoint``; CheckpointError if corrupt."""
    directory = check_table_files(path, checkpoint)
    try:
        dcp.load(state, checkpoint_id=str(directory))
    except Exception as err:  # noqa: BLE001 -- DCP wraps each rank's failure in its own type
        first = str(err).strip().splitlines()
        raise CheckpointError(f"checkpoint {path}: the tables in {directory} cannot be read "
                              f"({type(err).__name__}: {first[-1] if first else ''}); a shard "
                              f"is corrupt") from err


def first_line(err: BaseException) -> str:
    """The line of an error worth showing: its last non-empty line (DCP lists tracebacks)."""
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(err).__name__


# -- the tokenizer record ----------------------------------------------------------------------

@runtime_checkable
class TokenizerRecord(Protocol):
    """A data module that names its tokenizer in every checkpoint (under ``TOKENIZER_KEY``)."""

    def tokenizer_record(self) -> dict[str, str]:
        """``{"tokenizer_file": path or hub id, "tokenizer_fingerprint": fingerprint}``."""
        ...


def record_tokenizer(checkpoint: dict[str, Any], datamodule: object | None) -> None:
    """Write ``datamodule``'s tokenizer record into ``checkpoint``, when it keeps one."""
    if isinstance(datamodule, TokenizerRecord):
        checkpoint[TOKENIZER_KEY] = datamodule.tokenizer_record()


def record_special_tokens(checkpoint: dict[str, Any], datamodule: object | None) -> None:
    """Write the data's BOS, EOS and padding ids (``bos_id``... of ``datamodule``, those it has)
    into ``checkpoint``: an exported model's config carries them, so that generation stops at
    EOS even for a model of token ids without a tokenizer (cfg3f)."""
    ids = {name: getattr(datamodule, f"{name}_id", None) for name in ("bos", "eos", "pad")}
    ids = {name: int(value) for name, value in ids.items() if isinstance(value, int)}
    if ids:
        checkpoint[SPECIAL_TOKENS_KEY] = ids

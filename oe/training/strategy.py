"""A Lightning strategy for row-wise sharded n-gram tables: DDP for the rest, lossless checkpoints.

The model shards its tables in ``configure_model`` (``oe.training.sharding``, through
``oe.distributed.parallelize``) and names their parameters in ``_ddp_params_and_buffers_to_ignore``,
so DDP averages only the dense gradients.
Lightning's own checkpointing would keep rank 0's file alone, losing every other rank's rows; here
a checkpoint ``X.ckpt`` is the dense state (written by rank 0, as usual) plus a table folder,
every rank's rows and fused-optimiser state written with torch.distributed.checkpoint (DCP).
DCP reshards on load, so a checkpoint from W ranks resumes on any number of ranks.

A save is atomic: every rank writes into a new folder ``X.ckpt.tables.<step>.<id>.tmp``, renamed
without ``.tmp`` once DCP has written its index; then rank 0 writes ``X.ckpt`` (naming that
folder) under a temporary name and renames it over the previous one; only then are the previous
folder and any leftovers of interrupted saves removed. A kill at any moment leaves either the old
pair or the new one, both complete.

Before anything is loaded the checkpoint's tables (vocabulary, orders, k, moduli, widths,
optimiser) are compared with the model's: a mismatch is one ValueError and the model is left as
it was. The format and its checks live in ``oe.distributed.checkpoint``, the tables' signature
and state in ``oe.distributed.table_state``.

The class was ``oe.distributed.strategy.ShardedTableStrategy`` before the distributed layer was
freed of Lightning, and configs written then (every saved run's ``config.yaml``) name it so; that
path stays an alias of this class (``FORMER_MODULE``, below).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import types
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from lightning.pytorch.strategies import DDPStrategy

from oe.distributed.checkpoint import (PAIR_FILE, TABLE_DIR_KEY, TABLE_KEY, CheckpointWriteError,
                                       first_line, is_write_failure, load_table_files,
                                       read_checkpoint, write_failure)
from oe.distributed.parallelize import sharded_collections, table_owners
from oe.distributed.table_state import (check_tables, load_full_tables, load_table_state,
                                        table_signature, table_state)
from oe.training.checkpoint_io import AtomicCheckpointIO


def _leftovers(filepath: Path, keep: str | None) -> list[Path]:
    """Table folders and temporary files of ``filepath`` other than the folder ``keep``."""
    folders = [p for p in filepath.parent.glob(f"{filepath.name}.tables*") if p.name != keep]
    partial = list(filepath.parent.glob(f".{filepath.name}.*.tmp"))
    return [*folders, *partial]


def _remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _reason(err: BaseException) -> str:
    """One line for a failed table save; DCP's exception holds each rank's traceback."""
    reason = write_failure(err)
    if reason is not None:
        return reason
    failures = getattr(err, "failures", None)
    if failures:
        first = next(iter(failures.values()))
        return first_line(first[0] if isinstance(first, tuple) else first)
    return first_line(err)


def _free_space(folder: Path) -> str:
    """``; N bytes free there``: what a reader needs where DCP's writer hides the OSError."""
    try:
        return f" ({shutil.disk_usage(folder).free:,} bytes free in {folder})"
    except OSError:
        return ""


def _holds_meta_tensors(module: torch.nn.Module) -> bool:
    return any(t.is_meta for t in (*module.parameters(), *module.buffers()))


class ShardedTableStrategy(DDPStrategy):
    """DDP for the dense parameters; sharded n-gram tables saved and loaded by every rank."""

    strategy_name = "ddp_sharded_tables"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("checkpoint_io", AtomicCheckpointIO())
        super().__init__(**kwargs)
        self._loading_from: str | None = None
        self._loaded: Mapping[str, Any] | None = None

    def _table_prefixes(self) -> tuple[str, ...]:
        return tuple(f"{p}." for p in sharded_collections(self.lightning_module))

    def lightning_module_state_dict(self) -> dict[str, Any]:
        prefixes = self._table_prefixes()
        state = super().lightning_module_state_dict()
        return {k: v for k, v in state.items() if not (prefixes and k.startswith(prefixes))}

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: str | Path,
                        storage_options: Any | None = None) -> None:
        module, filepath = self.lightning_module, Path(filepath)
        step = checkpoint.get("global_step")
        # One name on every rank: rank 0's.
        name = self.broadcast(f"{filepath.name}.tables.{step}.{uuid.uuid4().hex[:8]}")
        final = filepath.parent / name
        writing = final.with_name(f"{name}.tmp")
        try:
            if self.is_global_zero:
                writing.mkdir(parents=True, exist_ok=False)
            self.barrier("ShardedTableStrategy.save_checkpoint")
            dcp.save(table_state(module), checkpoint_id=str(writing))  # collective: all or none
            if self.is_global_zero:
                pair = {"checkpoint": filepath.name, "global_step": step}
                (writing / PAIR_FILE).write_text(json.dumps(pair))
                os.replace(writing, final)
        except BaseException as err:  # DCP's CheckpointException is a BaseException
            if self.is_global_zero:
                _remove([writing])
            if isinstance(err, CheckpointWriteError) or not (
                    isinstance(err, Exception) or is_write_failure(err)):
                raise  # a kill, Ctrl-C, exit: as it came
            kept = f"; the previous {filepath.name} is kept" if filepath.exists() else ""
            raise CheckpointWriteError(
                f"could not write the tables of checkpoint {filepath} into {writing}: "
                f"{_reason(err)}{_free_space(filepath.parent)}{kept}"
            ) from err
        checkpoint[TABLE_KEY] = table_signature(module)
        checkpoint[TABLE_DIR_KEY] = name
        try:
            super().save_checkpoint(checkpoint, filepath, storage_options=storage_options)
        except CheckpointWriteError:
            if self.is_global_zero:
                _remove([final])
            raise
        if self.is_global_zero:
            _remove(_leftovers(filepath, keep=name))  # the previous pair is replaced only now

    def remove_checkpoint(self, filepath: str | Path) -> None:
        super().remove_checkpoint(filepath)
        if self.is_global_zero:
            _remove(_leftovers(Path(filepath), keep=None))

    def teardown(self) -> None:
        # A run that failed before its tables were sharded still holds them on the meta device;
        # moving those to the CPU would raise and hide the error that ended the run.
        module = self.lightning_module
        if module is not None and _holds_meta_tensors(module):
            module.cpu = lambda: module._apply(lambda t: t if t.is_meta else t.cpu())  # type: ignore[method-assign]
            try:
                super().teardown()
            finally:
                del module.cpu
            return
        super().teardown()

    def load_checkpoint(self, checkpoint_path: str | Path,
                        weights_only: bool | None = None) -> dict[str, Any]:
        # A run's own checkpoint: its hyper-parameters are pickled config dataclasses, which
        # torch.load's default weights_only=True refuses.
        checkpoint = read_checkpoint(checkpoint_path)
        check_tables(checkpoint, self.lightning_module, checkpoint_path)
        self._loading_from = str(checkpoint_path)
        self._loaded = checkpoint
        return checkpoint

    def load_model_state_dict(self, checkpoint: Mapping[str, Any], strict: bool = True) -> None:
        module = self.lightning_module
        prefixes = tuple(f"{p}." for p in table_owners(module))
        if not prefixes:
            return super().load_model_state_dict(checkpoint, strict=strict)
        dense = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(prefixes)}
        full = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefixes)}
        # The tables' own entries keep them as they are here; they are filled below.
        for prefix, owner in table_owners(module).items():
            dense.update({f"{prefix}.{k}": v for k, v in owner.ngram.state_dict().items()})
        missing, unexpected = module.load_state_dict(dense, strict=False)
        missing = [k for k in missing if not k.startswith(prefixes)]
        if strict and (missing or unexpected):
            raise RuntimeError(
                f"checkpoint {self._loading_from}: missing keys {missing}, unexpected {unexpected}"
            )
        # A single-device checkpoint (oe.distributed.export.single_device_checkpoint): every
        # row, no optimiser state.
        if full:
            load_full_tables(module, full)
            return None
        state = table_state(module)
        load_table_files(state, self._loading_from, self._loaded or checkpoint)
        load_table_state(module, state)
        return None


# Configs written before the move name the class ``oe.distributed.strategy.ShardedTableStrategy``.
# jsonargparse (LightningCLI's parser) imports a ``class_path`` as module path + name and has no
# aliases of its own, so that module name is registered here as a module that holds this class
# alone, as Lightning keeps its own moved modules importable. It is registered here rather than
# by a file in oe/distributed, which imports no Lightning; every config loader imports this
# module first (oe.cli.config -> oe.training.lm -> oe.training.sharding -> here). A config keeps
# the path it was given (a run resumed from an old config.yaml saves the former path again).
FORMER_MODULE = "oe.distributed.strategy"
_former = types.ModuleType(FORMER_MODULE, f"Former path of {__name__}.ShardedTableStrategy; "
                                          f"kept for configs written before the move.")
_former.ShardedTableStrategy = ShardedTableStrategy  # type: ignore[attr-defined]
sys.modules.setdefault(FORMER_MODULE, _former)

"""A Lightning strategy for row-wise sharded n-gram tables: DDP for the rest, lossless checkpoints.

The model shards its tables in ``configure_model`` (``oe.distributed.parallelize``) and names their
parameters in ``_ddp_params_and_buffers_to_ignore``, so DDP averages only the dense gradients.
Lightning's own checkpointing would keep rank 0's file alone, losing every other rank's rows; here
a checkpoint ``X.ckpt`` is the dense state (written by rank 0, as usual) plus ``X.ckpt.tables/``,
every rank's rows and fused-optimiser state written with torch.distributed.checkpoint (DCP).
DCP reshards on load, so a checkpoint from W ranks resumes on any number of ranks.

Before anything is loaded the checkpoint's tables (vocabulary, orders, k, moduli, widths,
optimiser) are compared with the model's: a mismatch is one ValueError and the model is left as
it was. The format and its checks live in ``oe.distributed.checkpoint``.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch.distributed.checkpoint as dcp
from lightning.pytorch.strategies import DDPStrategy

from oe.distributed.checkpoint import (TABLE_KEY, check_tables, load_full_tables, load_table_state,
                                      table_dir, table_signature, table_state)
from oe.distributed.parallelize import sharded_collections, table_owners


class ShardedTableStrategy(DDPStrategy):
    """DDP for the dense parameters; sharded n-gram tables saved and loaded by every rank."""

    strategy_name = "ddp_sharded_tables"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._loading_from: str | None = None

    def _table_prefixes(self) -> tuple[str, ...]:
        return tuple(f"{p}." for p in sharded_collections(self.lightning_module))

    def lightning_module_state_dict(self) -> dict[str, Any]:
        prefixes = self._table_prefixes()
        state = super().lightning_module_state_dict()
        return {k: v for k, v in state.items() if not (prefixes and k.startswith(prefixes))}

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: str | Path,
                        storage_options: Any | None = None) -> None:
        module = self.lightning_module
        directory = table_dir(filepath)
        if self.is_global_zero and directory.exists():
            shutil.rmtree(directory)  # files of an earlier save, perhaps from more ranks
        self.barrier("ShardedTableStrategy.save_checkpoint")
        dcp.save(table_state(module), checkpoint_id=str(directory))
        checkpoint[TABLE_KEY] = table_signature(module)
        super().save_checkpoint(checkpoint, filepath, storage_options=storage_options)

    def remove_checkpoint(self, filepath: str | Path) -> None:
        super().remove_checkpoint(filepath)
        if self.is_global_zero:
            shutil.rmtree(table_dir(filepath), ignore_errors=True)

    def load_checkpoint(self, checkpoint_path: str | Path,
                        weights_only: bool | None = None) -> dict[str, Any]:
        # A run's own checkpoint: its hyper-parameters are pickled config dataclasses, which
        # torch.load's default weights_only=True refuses.
        weights_only = False if weights_only is None else weights_only
        checkpoint = super().load_checkpoint(checkpoint_path, weights_only=weights_only)
        check_tables(checkpoint, self.lightning_module, checkpoint_path)
        self._loading_from = str(checkpoint_path)
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
        # A single-device checkpoint (oe.distributed.checkpoint.single_device_checkpoint): every
        # row, no optimiser state.
        if full:
            load_full_tables(module, full)
            return None
        state = table_state(module)
        dcp.load(state, checkpoint_id=str(table_dir(self._loading_from)))
        load_table_state(module, state)
        return None

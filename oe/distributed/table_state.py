"""The n-gram tables' side of a checkpoint: their signature (what a checkpoint's tables must agree
with), their state for torch.distributed.checkpoint (rows and fused-optimiser state, sharded or
not), and whole tables copied into a model (each rank its own rows).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.embedding import ShardedEmbeddingCollection

from oe.distributed.checkpoint import TABLE_KEY, check_table_files
from oe.distributed.parallelize import local_shard, row_split, table_optimizer, table_owners


def table_signature(module: nn.Module) -> dict[str, dict]:
    """What a checkpoint's tables must agree with: vocabulary, orders, k, moduli, optimiser."""
    return {
        prefix: {
            "vocab_size": owner.vocab_size,
            "orders": sorted(owner.config.orders),
            "k": owner.config.k,
            "modulus": owner.config.modulus,
            "hash": owner.config.hash,
            "signed": owner.config.signed,  # the same rows mean other things with the sign trick
            "tables": [[t.name, t.modulus, t.width] for t in owner.tables],
            "table_optimizer": table_optimizer(owner.config),
        }
        for prefix, owner in table_owners(module).items()
    }


def table_state(module: nn.Module) -> dict[str, dict]:
    """The tables of ``module`` (sharded or not) and, when sharded, their optimiser state.

    Values are the live tensors (or ShardedTensors over them), as torch.distributed.checkpoint
    wants them for saving and for loading in place.
    """
    state = {}
    for prefix, owner in table_owners(module).items():
        state[f"{prefix}.tables"] = dict(owner.ngram.state_dict())
        if isinstance(owner.ngram, ShardedEmbeddingCollection):
            state[f"{prefix}.optimizer"] = owner.ngram.fused_optimizer.state_dict()["state"]
    return state


def load_table_state(module: nn.Module, state: dict[str, dict]) -> None:
    """Copy ``state`` (as from ``table_state``, then filled by DCP) into the module's tables."""
    for prefix, owner in table_owners(module).items():
        owner.ngram.load_state_dict(state[f"{prefix}.tables"])
        if isinstance(owner.ngram, ShardedEmbeddingCollection):
            owner.ngram.fused_optimizer.load_state_dict({"state": state[f"{prefix}.optimizer"]})


@torch.no_grad()
def load_full_tables(module: nn.Module, full: dict[str, torch.Tensor]) -> None:
    """Copy whole tables (``{state key: [rows, width]}``) into the module: own rows when sharded."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    for prefix, owner in table_owners(module).items():
        for t in owner.tables:
            key = f"{prefix}.embeddings.{t.name}.weight"
            if key not in full:
                raise ValueError(f"the checkpoint has no {key}")
            if tuple(full[key].shape) != (t.modulus, t.width):
                raise ValueError(f"{key} is {tuple(full[key].shape)} in the checkpoint, "
                                 f"({t.modulus}, {t.width}) in the model")
        for t in owner.tables:
            source = full[f"{prefix}.embeddings.{t.name}.weight"]
            if isinstance(owner.ngram, ShardedEmbeddingCollection):
                start, count = row_split(t.modulus, world)[rank]
                local_shard(owner.ngram, t.name).copy_(source[start : start + count])
            else:
                owner.ngram.embeddings[t.name].weight.copy_(source)


def check_tables(checkpoint: Mapping[str, Any], module: nn.Module, path: str | Path) -> None:
    """One ValueError unless ``checkpoint``'s n-gram tables fit ``module``'s exactly."""
    ours = table_signature(module)
    theirs = checkpoint.get(TABLE_KEY)
    if theirs is None:
        full = [k for k in checkpoint.get("state_dict", {})
                if any(k.startswith(f"{p}.") for p in ours)]
        if ours and not full:
            raise ValueError(
                f"checkpoint {path} holds no n-gram tables (neither {TABLE_KEY!r} nor the table "
                f"weights); it was not written by this model kind"
            )
        return
    if not ours:
        raise ValueError(f"checkpoint {path} holds n-gram tables, but this model has none")
    for prefix, mine in ours.items():
        saved = theirs.get(prefix)
        if saved is None:
            raise ValueError(f"checkpoint {path} has no tables for {prefix}")
        # written before there were other hash families, or the sign trick
        saved = {"hash": "polynomial", "signed": False, **saved}
        diff = [f"{key}: checkpoint {saved.get(key)!r}, model {value!r}"
                for key, value in mine.items() if saved.get(key) != value]
        if diff:
            raise ValueError(
                f"checkpoint {path} was written for other n-gram tables ({'; '.join(diff)}); "
                "model.over_encoding (orders, k, modulus, hash, signed, table_optimizer) and "
                "data.vocab_size "
                "must match the checkpoint"
            )
    if TABLE_KEY in checkpoint and not any(
        k.startswith(tuple(f"{p}." for p in ours)) for k in checkpoint.get("state_dict", {})
    ):
        check_table_files(path, checkpoint)

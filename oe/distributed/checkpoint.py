"""Checkpoints of a model with n-gram tables: the format, its checks, export, and loading for evaluation.

A training checkpoint ``X.ckpt`` is Lightning's dense state (written by rank 0) plus, when the
tables are sharded, ``X.ckpt.tables/``: every rank's rows and their fused-optimiser state,
written with torch.distributed.checkpoint (DCP), which reshards on load. Its entry ``TABLE_KEY``
is the tables' signature (vocabulary, orders, k, moduli, widths, optimiser); a checkpoint is
loaded only into a model whose signature is the same.

``single_device_checkpoint`` turns such a checkpoint into one plain state dict (every table row,
no optimiser state) that loads in one process; ``load_for_evaluation`` builds the network of any
checkpoint of ``oe.cli.fit`` (plain or exported) with ``oe.models.build.build_model``.

The tokenizer a model was trained with is recorded under ``TOKENIZER_KEY`` by the data module
that offers it (``TokenizerRecord``), so that evaluation reads text the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torchrec.distributed.embedding import ShardedEmbeddingCollection

from oe.distributed.parallelize import local_shard, row_split, table_optimizer, table_owners
from oe.models.build import build_arguments, build_model
from oe.models.gpt import GPT

TABLE_KEY = "sharded_ngram_tables"  # the checkpoint's entry describing its tables
TOKENIZER_KEY = "tokenizer"  # the checkpoint's entry naming the tokenizer: TokenizerRecord
MODEL_PREFIX = "model."  # the GPT's keys in the LightningModule's state dict
# What an exported checkpoint keeps beside the weights: enough to rebuild and to read text.
KEPT = ("hyper_parameters", "hparams_name", "pytorch-lightning_version", "epoch", "global_step",
        "datamodule_hyper_parameters", TABLE_KEY, TOKENIZER_KEY)


def table_dir(checkpoint_path: str | Path) -> Path:
    """Where the tables of checkpoint ``checkpoint_path`` live."""
    return Path(f"{checkpoint_path}.tables")


# -- the tables' signature and state ----------------------------------------------------------

def table_signature(module: nn.Module) -> dict[str, dict]:
    """What a checkpoint's tables must agree with: vocabulary, orders, k, moduli, optimiser."""
    return {
        prefix: {
            "vocab_size": owner.vocab_size,
            "orders": sorted(owner.config.orders),
            "k": owner.config.k,
            "modulus": owner.config.modulus,
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
        diff = [f"{key}: checkpoint {saved.get(key)!r}, model {value!r}"
                for key, value in mine.items() if saved.get(key) != value]
        if diff:
            raise ValueError(
                f"checkpoint {path} was written for other n-gram tables ({'; '.join(diff)}); "
                "model.over_encoding (orders, k, modulus, table_optimizer) and data.vocab_size "
                "must match the checkpoint"
            )
    if TABLE_KEY in checkpoint and not (table_dir(path) / ".metadata").is_file() and not any(
        k.startswith(tuple(f"{p}." for p in ours)) for k in checkpoint.get("state_dict", {})
    ):
        raise ValueError(f"checkpoint {path}: its table directory {table_dir(path)} is missing")


# -- export: one process, every row -----------------------------------------------------------

def read_tables(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The dense checkpoint and every tensor of its table directory, whole, by flat DCP key.

    Keys read ``<collection>.tables.embeddings.<table>.weight`` for the rows and
    ``<collection>.optimizer.embeddings.<table>.weight.<state>`` for the optimiser state.
    Runs in one process, no process group needed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if TABLE_KEY not in checkpoint:
        raise ValueError(f"checkpoint {path} has no sharded n-gram tables ({TABLE_KEY!r} missing)")
    directory = table_dir(path)
    if not (directory / ".metadata").is_file():
        raise ValueError(f"checkpoint {path}: its table directory {directory} is missing")
    metadata = dcp.FileSystemReader(str(directory)).read_metadata()
    tensors = {
        key: torch.empty(meta.size, dtype=meta.properties.dtype)
        for key, meta in metadata.state_dict_metadata.items()
        if isinstance(meta, TensorStorageMetadata)
    }
    dcp.load(tensors, checkpoint_id=str(directory))
    return checkpoint, tensors


def single_device_checkpoint(path: str | Path) -> dict[str, Any]:
    """The exported checkpoint: dense state and every table row in one state dict.

    Optimiser and loop states are left out; ``LanguageModel.load_from_checkpoint`` and
    ``load_for_evaluation`` read it in one process.
    """
    checkpoint, tensors = read_tables(path)
    state = dict(checkpoint["state_dict"])
    for prefix, signature in checkpoint[TABLE_KEY].items():
        for name, _rows, _width in signature["tables"]:
            state[f"{prefix}.embeddings.{name}.weight"] = tensors[
                f"{prefix}.tables.embeddings.{name}.weight"
            ]
    out = {k: v for k, v in checkpoint.items() if k in KEPT}
    out["state_dict"] = state
    return out


# -- the tokenizer record and loading for evaluation ------------------------------------------

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


def load_for_evaluation(path: str | Path) -> tuple[GPT, dict[str, str] | None]:
    """The network of a checkpoint of ``oe.cli.fit`` (plain tables) and its tokenizer record.

    The shape comes from the recorded hyper-parameters (a pretrained backbone's own shape, so
    the pretrained source is not read again); the weights from the checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if "hyper_parameters" not in checkpoint or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a checkpoint of oe.cli.fit (no hyper_parameters or state_dict)")
    arguments = build_arguments(checkpoint["hyper_parameters"], where=f"{path}: model")
    arguments.update(pretrained=None, freeze_backbone=False, heads=None)  # weights follow
    model = build_model(**arguments).gpt
    state = {k[len(MODEL_PREFIX):]: v for k, v in checkpoint["state_dict"].items()
             if k.startswith(MODEL_PREFIX)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path} does not load into its model (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); a checkpoint with row-wise sharded tables needs "
            "`python -m oe.export` first"
        )
    return model, checkpoint.get(TOKENIZER_KEY)

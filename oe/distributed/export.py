"""A checkpoint with sharded tables as one plain state dict, read in one process (``oe export``).

``single_device_checkpoint`` reads the dense checkpoint and every row of its table folder (no
process group needed) and keeps what rebuilds the model and reads its text (``KEPT``); the
optimiser and loop states are left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from oe.distributed.checkpoint import (SPECIAL_TOKENS_KEY, TABLE_KEY, TOKENIZER_KEY, CheckpointError,
                                       check_table_files, load_table_files, read_checkpoint)

# What an exported checkpoint keeps beside the weights: enough to rebuild and to read text.
KEPT = ("hyper_parameters", "hparams_name", "pytorch-lightning_version", "epoch", "global_step",
        "datamodule_hyper_parameters", TABLE_KEY, TOKENIZER_KEY, SPECIAL_TOKENS_KEY)


def read_tables(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The dense checkpoint and every tensor of its table directory, whole, by flat DCP key.

    Keys read ``<collection>.tables.embeddings.<table>.weight`` for the rows and
    ``<collection>.optimizer.embeddings.<table>.weight.<state>`` for the optimiser state.
    Runs in one process, no process group needed.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    checkpoint = read_checkpoint(path)
    if TABLE_KEY not in checkpoint:
        raise CheckpointError(f"checkpoint {path} has no sharded n-gram tables ({TABLE_KEY!r} missing)")
    directory = check_table_files(path, checkpoint)
    metadata = dcp.FileSystemReader(str(directory)).read_metadata()
    tensors = {
        key: torch.empty(meta.size, dtype=meta.properties.dtype)
        for key, meta in metadata.state_dict_metadata.items()
        if isinstance(meta, TensorStorageMetadata)
    }
    load_table_files(tensors, path, checkpoint)
    return checkpoint, tensors


def single_device_checkpoint(path: str | Path) -> dict[str, Any]:
    """The exported checkpoint: dense state and every table row in one state dict.

    Optimiser and loop states are left out; ``LanguageModel.load_from_checkpoint`` and
    ``oe.huggingface.load.load_for_evaluation`` read it in one process.
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

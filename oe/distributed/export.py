"""``python -m oe.export CKPT OUT``: a single-device checkpoint from a sharded-table checkpoint.

A training checkpoint ``CKPT`` is the dense state plus ``CKPT.tables/`` (every rank's rows and
their optimiser state, torch.distributed.checkpoint). OUT holds the model alone, every table row
in its plain state dict, for evaluation and generation in one process:
``LanguageModel.load_from_checkpoint(OUT)``. Optimiser and loop states are left out.
Runs in one process, no process group needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from oe.distributed.strategy import TABLE_KEY, table_dir

KEPT = ("hyper_parameters", "hparams_name", "pytorch-lightning_version", "epoch", "global_step",
        TABLE_KEY)


def read_tables(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The dense checkpoint and every tensor of its table directory, whole, by flat DCP key.

    Keys read ``<collection>.tables.embeddings.<table>.weight`` for the rows and
    ``<collection>.optimizer.embeddings.<table>.weight.<state>`` for the optimiser state.
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
    """The exported checkpoint: dense state and every table row in one state dict."""
    checkpoint, tensors = read_tables(path)
    state = dict(checkpoint["state_dict"])
    for prefix, signature in checkpoint[TABLE_KEY].items():
        for name, _rows, _width in signature["tables"]:
            state[f"{prefix}.embeddings.{name}.weight"] = tensors[
                f"{prefix}.tables.embeddings.{name}.weight"
            ]
    # Data modules' states (Lightning keys them by class name) carry e.g. the tokenizer used.
    out = {k: v for k, v in checkpoint.items() if k in KEPT or k.endswith("DataModule")
           or k == "datamodule_hyper_parameters"}
    out["state_dict"] = state
    return out

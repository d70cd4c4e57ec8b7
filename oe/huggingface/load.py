"""The one model loader: an exported Hugging Face directory, or a checkpoint of ``oe fit``, as
(network, tokenizer).

A GPT-2 directory loads through ``oe.models.pretrained`` (as any pretrained GPT-2). An ``oe_gpt``
directory and a checkpoint file are both rebuilt by ``build_model`` from the model section they
keep (the config's ``oe_model``, the checkpoint's hyper-parameters) and their weights read
straight into the network (``network_of``): no transformers, no remote code, and for a
checkpoint with sharded tables every row of its table folder, in this process
(``load_for_evaluation``). The tokenizer is the one recorded or held, unless given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from oe.distributed.checkpoint import MODEL_PREFIX, TABLE_KEY, TOKENIZER_KEY, read_fit_checkpoint
from oe.distributed.export import single_device_checkpoint
from oe.huggingface.export import INDEX_FILE
from oe.models.build import build_model
from oe.models.config import ModelConfig
from oe.models.gpt import GPT
from oe.models.pretrained import CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE
from oe.tokenizer import checkpoint_tokenizer


def load_exported(directory: str | Path) -> tuple[GPT, str | None]:
    """The network of an exported directory and its tokenizer source (None: it has none)."""
    directory = Path(directory)
    config_file = directory / CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: not a Hugging Face model directory")
    config = json.loads(config_file.read_text())
    model_type = config.get("model_type")
    if model_type == "gpt2":
        model = build_model(vocab_size=config["vocab_size"], pretrained=str(directory)).gpt
    elif model_type == "oe_gpt":
        model = _load_oe(directory, config)
    else:
        raise ValueError(f"{config_file}: model_type is {model_type!r}; expected 'gpt2' or 'oe_gpt' "
                         "(a directory written by oe export --format hf)")
    tokenizer = directory / TOKENIZER_FILE
    return model, str(tokenizer) if tokenizer.is_file() else None


def network_of(section: Mapping[str, Any], state: Mapping[str, torch.Tensor], where: str,
               source: str, described_by: str) -> GPT:
    """The network a ``model`` section describes, with the weights of ``state`` (a
    LightningModule's keys: ``model.`` + the network's); the training-only heads are left out.

    Errors name the section's file as ``where`` (then its field, ``ModelConfig.from_section``)
    and the weights as ``source`` ("``source`` does not load into the model ``described_by``")."""
    model = build_model(ModelConfig.from_section(section, where).trained(heads=False)).gpt
    own = {k[len(MODEL_PREFIX):]: v for k, v in state.items() if k.startswith(MODEL_PREFIX)}
    missing, unexpected = model.load_state_dict(own, strict=False)
    if missing or unexpected:
        raise ValueError(f"{source} does not load into the model {described_by} "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model


def _load_oe(directory: Path, config: dict) -> GPT:
    index = directory / INDEX_FILE
    files = (sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file()
             else [WEIGHTS_FILE])
    state = {}
    for name in files:
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} not found (listed by {index.name})")
        state.update(load_file(str(directory / name)))
    return network_of(config.get("oe_model") or {}, state, f"{directory / CONFIG_FILE} (oe_model)",
                      str(directory), "its config describes")


def load_for_evaluation(path: str | Path) -> tuple[GPT, dict[str, str] | None]:
    """The network of a checkpoint of ``oe.cli.fit`` and its tokenizer record.

    The shape comes from the recorded hyper-parameters (a pretrained backbone's own shape, so
    the pretrained source is not read again); the weights from the checkpoint: a training
    checkpoint with sharded tables is read with its table folder, every row, in this process.
    A file that is no such checkpoint is one CheckpointError naming it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} not found")
    checkpoint = read_fit_checkpoint(path)
    tables = tuple(f"{prefix}." for prefix in checkpoint.get(TABLE_KEY) or {})
    if tables and not any(k.startswith(tables) for k in checkpoint["state_dict"]):
        checkpoint = single_device_checkpoint(path)  # the rows live in the table folder
    model = network_of(checkpoint["hyper_parameters"], checkpoint["state_dict"],
                       f"checkpoint {path}", f"checkpoint {path}", "its hyper-parameters describe")
    return model, checkpoint.get(TOKENIZER_KEY)


def load_model(path: str | Path, tokenizer: str | None = None) -> tuple[GPT, object]:
    """(network, ``tokenizers.Tokenizer``) of a checkpoint file or an exported directory.

    ``tokenizer`` overrides the one the checkpoint records or the directory holds; without
    either, one ValueError saying to give it.
    """
    path = Path(path)
    if path.is_dir():
        model, source = load_exported(path)
        record = None if source is None else {"tokenizer_file": source}
    elif path.is_file():
        model, record = load_for_evaluation(path)
    else:
        raise FileNotFoundError(f"checkpoint {path} not found (a .ckpt file or an exported directory)")
    loaded = checkpoint_tokenizer(record, tokenizer, model.vocab_size, f"the checkpoint {path}")
    if loaded is None:
        raise ValueError(f"checkpoint {path} has no tokenizer (it records no tokenizer file, or "
                         "holds no tokenizer.json); give one: tokenizer=PATH with lm-eval, or "
                         "pass --tokenizer to oe evaluate and oe generate")
    return model.eval(), loaded


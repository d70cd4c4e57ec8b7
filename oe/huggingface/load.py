"""An exported Hugging Face directory, or a checkpoint of ``oe fit``, as (network, tokenizer).

A GPT-2 directory loads through ``oe.models.pretrained`` (as any pretrained GPT-2); an ``oe_gpt``
directory is rebuilt by ``build_model`` from its config's model section, its safetensors shards
read straight into the network (no transformers, no remote code). Checkpoint files load through
``oe.distributed.checkpoint.load_for_evaluation`` and the tokenizer they record.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from oe.distributed.checkpoint import MODEL_PREFIX, load_for_evaluation
from oe.huggingface.export import INDEX_FILE
from oe.models.build import build_arguments, build_model
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


def _load_oe(directory: Path, config: dict) -> GPT:
    arguments = build_arguments(config.get("oe_model") or {}, where=f"{directory / CONFIG_FILE}: oe_model")
    arguments.update(pretrained=None, freeze_backbone=False, heads=None)  # weights follow
    model = build_model(**arguments).gpt
    index = directory / INDEX_FILE
    files = (sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file()
             else [WEIGHTS_FILE])
    state = {}
    for name in files:
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} not found (listed by {index.name})")
        state.update(load_file(str(directory / name)))
    own = {k[len(MODEL_PREFIX):]: v for k, v in state.items() if k.startswith(MODEL_PREFIX)}
    missing, unexpected = model.load_state_dict(own, strict=False)
    if missing or unexpected:
        raise ValueError(f"{directory} does not load into the model its config describes "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model


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


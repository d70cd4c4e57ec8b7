"""A checkpoint of ``oe fit`` as a Hugging Face model directory (``oe export --format hf``).

A baseline (token embedding, GPT-2 backbone, no extra heads) becomes a plain GPT-2
(``oe.models.pretrained.save_gpt2``): ``AutoModelForCausalLM.from_pretrained(OUT)`` loads it.
Any other kind that ``build_model`` builds from its hyper-parameters alone (Over-Encoding,
Over-Decoding / MTP heads, both) becomes a directory of its own ``model_type`` (``oe_gpt``),
loaded with ``trust_remote_code=True`` through ``oe.huggingface.modeling`` (``oe`` installed).
Either way the tokenizer goes along (``tokenizer.json`` and ``tokenizer_config.json``:
``AutoTokenizer.from_pretrained(OUT)``). ``config.json`` names the BOS, EOS and padding ids (the
data's, as the checkpoint records them, else the tokenizer's ``<|endoftext|>``), so that
``generate`` stops at EOS; every file is readable as the umask allows (safetensors writes 0600).

The weights of an ``oe_gpt`` directory are safetensors shards with an index: the dense part in
one file, every n-gram table in a file of its own. Tables of a row-wise sharded checkpoint are
read from its table directory one at a time (torch.distributed.checkpoint gathers each from every
rank's shard files), written, and dropped, so the export never holds more than the dense part and
one table; a plain checkpoint is memory-mapped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import save_file

from oe.distributed.checkpoint import (MODEL_PREFIX, SPECIAL_TOKENS_KEY, TABLE_KEY, TOKENIZER_KEY,
                                       read_fit_checkpoint, table_dir)
from oe.distributed.parallelize import table_owners
from oe.models.build import build_model
from oe.models.config import ModelConfig
from oe.models.pretrained import CONFIG_FILE, TOKENIZER_FILE, save_gpt2
from oe.tokenizer import checkpoint_tokenizer

REMOTE_CODE_FILE = "modeling_oe.py"
INDEX_FILE = "model.safetensors.index.json"
EOT = "<|endoftext|>"
_REMOTE_CODE = '''"""An exported oe model: its classes live in the installed oe package (pip install oe)."""

from oe.huggingface.modeling import OEConfig, OEForCausalLM  # noqa: F401
'''


def is_gpt2(config: ModelConfig) -> bool:
    """Whether the network is exactly GPT-2: token embedding, biases, tied head, no extra heads."""
    heads, backbone = config.heads, config.backbone
    return (config.over_encoding is None and config.frequent_ngrams is None
            and (heads is None or heads.empty) and backbone.bias and backbone.tie_embeddings)


def check_expressible(config: ModelConfig) -> None:
    """One ValueError naming the kind when its network needs more than its hyper-parameters."""
    if config.frequent_ngrams is not None:
        raise ValueError(
            f"--format hf cannot express model kind {config.kind}: the frequent n-gram "
            "embedding is built from its mined n-gram file, which the format does not carry; "
            "export it with --format ckpt")


def export_hf(checkpoint_path: str | Path, out: str | Path, tokenizer: str | None = None,
              with_tokenizer: bool = True) -> tuple[str, str]:
    """Write the Hugging Face directory ``out`` for ``checkpoint_path``; returns the model's kind
    (``ModelConfig.kind``) and the directory's model_type (``gpt2`` or ``oe_gpt``).

    ``tokenizer``: a tokenizer.json, its directory or a hub id (default: the one the checkpoint
    records). ``with_tokenizer`` False writes no tokenizer files (a model trained on token ids).
    """
    # Tensors memory-mapped: a large plain table is not read whole.
    checkpoint = read_fit_checkpoint(checkpoint_path, mmap=True)
    config = ModelConfig.from_section(checkpoint["hyper_parameters"], str(checkpoint_path)).trained()
    check_expressible(config)
    tokenizer_object = (_tokenizer(checkpoint, checkpoint_path, tokenizer, config.vocab_size)
                        if with_tokenizer else None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    gpt2 = is_gpt2(config)
    block_size = (_write_gpt2(checkpoint, config, out) if gpt2
                  else _write_oe(checkpoint, checkpoint_path, config, out))
    eot = None
    if tokenizer_object is not None:
        eot = tokenizer_object.token_to_id(EOT)
        _write_tokenizer(tokenizer_object, out, block_size, eot is not None)
    _add_token_ids(out / CONFIG_FILE, special_token_ids(checkpoint, config, eot))
    readable_files(out)
    return config.kind, "gpt2" if gpt2 else "oe_gpt"


def special_token_ids(checkpoint: dict[str, Any], config: ModelConfig,
                      eot: int | None) -> dict[str, int]:
    """``bos_token_id``, ``eos_token_id`` and ``pad_token_id`` of the exported config: the ids the
    training data used (recorded in the checkpoint), else the tokenizer's ``<|endoftext|>`` for
    BOS and EOS; padding is the model's ``pad_id`` unless the data recorded one."""
    recorded = checkpoint.get(SPECIAL_TOKENS_KEY) or {}
    ids = {"bos_token_id": recorded.get("bos", eot), "eos_token_id": recorded.get("eos", eot),
           "pad_token_id": recorded.get("pad", config.pad_id)}
    return {key: int(value) for key, value in ids.items() if value is not None}


def readable_files(directory: Path) -> None:
    """Give every file under ``directory`` the mode a new file gets here (0644 with umask 022):
    safetensors writes its files 0600, which other users of a shared model folder cannot read."""
    umask = os.umask(0)
    os.umask(umask)
    for path in directory.rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~umask)


# -- a baseline: GPT-2 --------------------------------------------------------------------------

def _write_gpt2(checkpoint: dict[str, Any], config: ModelConfig, out: Path) -> int:
    model = build_model(config).gpt
    state = _model_state(checkpoint)
    model.load_state_dict(state)
    save_gpt2(model, out)
    return model.config.block_size


def _model_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k[len(MODEL_PREFIX):]: v for k, v in checkpoint["state_dict"].items()
            if k.startswith(MODEL_PREFIX)}


# -- any other kind: oe_gpt -----------------------------------------------------------------------

def _write_oe(checkpoint: dict[str, Any], path: str | Path, model: ModelConfig, out: Path) -> int:
    from oe.huggingface.modeling import OEConfig, OEForCausalLM

    section = model.section()
    config = OEConfig(oe_model=section, architectures=["OEForCausalLM"],
                      auto_map={"AutoConfig": "modeling_oe.OEConfig",
                                "AutoModelForCausalLM": "modeling_oe.OEForCausalLM"})
    with torch.device("meta"):  # names and shapes only
        shell = OEForCausalLM(config)
    expected = {k: tuple(v.shape) for k, v in shell.state_dict().items()}
    state = checkpoint["state_dict"]
    sharded = _table_keys(checkpoint)
    tables = [k for k in expected if k in sharded or k in _plain_table_keys(shell)]
    dense = {k: state[k].contiguous() for k in expected if k not in tables and k in state}
    missing = [k for k in expected if k not in dense and k not in tables]
    missing += [k for k in tables if k not in sharded and k not in state]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {', '.join(missing[:4])}"
                         + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
                         + f"; expected every weight of a {model.kind} model")
    files = ["model-dense.safetensors"]
    weight_map = {k: "model-dense.safetensors" for k in dense}
    _check_shapes(dense, expected, path)
    save_file(dense, str(out / "model-dense.safetensors"), metadata={"format": "pt"})
    del dense
    for number, (key, table) in enumerate(_tables(checkpoint, path, tables, sharded), start=1):
        _check_shapes({key: table}, expected, path)
        name = f"model-table{number:02d}-{key.split('.')[-2]}.safetensors"  # -ngram2_0
        save_file({key: table.contiguous()}, str(out / name), metadata={"format": "pt"})
        weight_map[key] = name
        files.append(name)
        del table
    total = sum((out / name).stat().st_size for name in files)
    (out / INDEX_FILE).write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2))
    config.save_pretrained(out)
    (out / REMOTE_CODE_FILE).write_text(_REMOTE_CODE)
    return section["backbone"]["block_size"]


def _table_keys(checkpoint: dict[str, Any]) -> dict[str, str]:
    """Model key -> table-directory key of each n-gram table stored row-wise sharded."""
    keys = {}
    for prefix, signature in (checkpoint.get(TABLE_KEY) or {}).items():
        for name, _rows, _width in signature["tables"]:
            model_key = f"{prefix}.embeddings.{name}.weight"
            if model_key not in checkpoint["state_dict"]:  # else exported already: plain weights
                keys[model_key] = f"{prefix}.tables.embeddings.{name}.weight"
    return keys


def _plain_table_keys(shell: torch.nn.Module) -> set[str]:
    """Keys of the n-gram tables of the (meta) model ``shell``: each goes to a file of its own."""
    return {f"{prefix}.embeddings.{t.name}.weight" for prefix, owner in table_owners(shell).items()
            for t in owner.tables}


def _tables(checkpoint: dict[str, Any], path: str | Path, keys: list[str],
            sharded: dict[str, str]) -> Iterator[tuple[str, torch.Tensor]]:
    """Each table, whole, one at a time: from the (memory-mapped) state dict, or for a sharded
    one from the table folder (torch.distributed.checkpoint reads the rows of every rank's files
    into the one tensor asked for)."""
    metadata = None
    for key in keys:
        if key not in sharded:
            yield key, checkpoint["state_dict"][key]
            continue
        directory = table_dir(path, checkpoint)
        if metadata is None:
            if not (directory / ".metadata").is_file():
                raise ValueError(f"checkpoint {path}: its table folder {directory} is missing")
            metadata = dcp.FileSystemReader(str(directory)).read_metadata().state_dict_metadata
        stored = sharded[key]
        if stored not in metadata:
            raise ValueError(f"{directory} holds no {stored}")
        one = {stored: torch.empty(metadata[stored].size, dtype=metadata[stored].properties.dtype)}
        dcp.load(one, checkpoint_id=str(directory))
        yield key, one.pop(stored)


def _check_shapes(tensors: dict[str, torch.Tensor], expected: dict[str, tuple], path) -> None:
    for key, value in tensors.items():
        if tuple(value.shape) != expected[key]:
            raise ValueError(f"checkpoint {path}: {key} is {tuple(value.shape)}, its model "
                             f"expects {expected[key]}")


# -- the tokenizer ------------------------------------------------------------------------------

def _tokenizer(checkpoint: dict[str, Any], path, source: str | None, vocab_size: int):
    tokenizer = checkpoint_tokenizer(checkpoint.get(TOKENIZER_KEY), source, vocab_size,
                                     f"the checkpoint {path}")
    if tokenizer is None:
        raise ValueError(f"{path} records no tokenizer ({TOKENIZER_KEY!r}); pass --tokenizer, or "
                         "--without_tokenizer for a model of token ids")
    return tokenizer


def _write_tokenizer(tokenizer, out: Path, block_size: int, has_eot: bool) -> None:
    """tokenizer.json as trained, read verbatim by ``PreTrainedTokenizerFast``."""
    tokenizer.save(str(out / TOKENIZER_FILE))
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast",
                              "model_max_length": block_size, "add_bos_token": False,
                              "clean_up_tokenization_spaces": False}
    if has_eot:  # GPT-2's one special token: beginning, end and unknown alike
        config.update(bos_token=EOT, eos_token=EOT, unk_token=EOT)
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def _add_token_ids(config_file: Path, ids: dict[str, int]) -> None:
    config = json.loads(config_file.read_text())
    config.update(ids)
    config_file.write_text(json.dumps(config, indent=2))

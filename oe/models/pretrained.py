"""GPT-2 checkpoints in Hugging Face format, read into (and written from) our backbone.

A source is a hub id (``gpt2``, ``openai-community/gpt2``: ``config.json`` and
``model.safetensors`` through ``huggingface_hub``) or a local directory holding the same files,
as ``transformers``' ``save_pretrained`` writes them. HF GPT-2 stores its projections as
``Conv1D`` weights ``[in, out]``; ``nn.Linear`` keeps ``[out, in]``, so they are transposed.
The mapping is exact: same pre-LN blocks, GELU (tanh), learned positions, LayerNorm eps 1e-5,
and the output head tied to the token embedding.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from oe.models.gpt import GPT, BackboneConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"

# Per block: our name -> (HF name, transposed?)
_BLOCK_MAP = {
    "ln_1.weight": ("ln_1.weight", False),
    "ln_1.bias": ("ln_1.bias", False),
    "attn.qkv.weight": ("attn.c_attn.weight", True),
    "attn.qkv.bias": ("attn.c_attn.bias", False),
    "attn.out.weight": ("attn.c_proj.weight", True),
    "attn.out.bias": ("attn.c_proj.bias", False),
    "ln_2.weight": ("ln_2.weight", False),
    "ln_2.bias": ("ln_2.bias", False),
    "mlp.up.weight": ("mlp.c_fc.weight", True),
    "mlp.up.bias": ("mlp.c_fc.bias", False),
    "mlp.down.weight": ("mlp.c_proj.weight", True),
    "mlp.down.bias": ("mlp.c_proj.bias", False),
}
_TOP_MAP = {
    "embedding.token.weight": "wte.weight",
    "position.weight": "wpe.weight",
    "ln_f.weight": "ln_f.weight",
    "ln_f.bias": "ln_f.bias",
}


def resolve_file(source: str, filename: str) -> Path:
    """``source/filename`` for a local directory, else the file of hub repo ``source``."""
    local = Path(source)
    if local.is_dir():
        path = local / filename
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: a local GPT-2 directory needs {CONFIG_FILE} and "
                f"{WEIGHTS_FILE} (as transformers' save_pretrained writes them)"
            )
        return path
    if local.exists() or source.startswith((".", "/")):
        raise FileNotFoundError(f"{source} is not a directory of a Hugging Face GPT-2 checkpoint")
    from oe.hub import hub_host, offline_unless_reachable

    offline = offline_unless_reachable()  # no minutes of retries without a route to the hub
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=source, filename=filename))
    except Exception as err:  # offline, unknown repo, missing file: one message for all
        why = (f"the hub ({hub_host()}) cannot be reached and no copy is cached" if offline
               else f"{type(err).__name__}: {err}")
        instead = (f"a {TOKENIZER_FILE} or a local directory holding one"
                   if filename == TOKENIZER_FILE
                   else f"a local directory with {CONFIG_FILE} and {WEIGHTS_FILE}")
        raise FileNotFoundError(
            f"could not get {filename} of hub model {source!r} ({why}); give {instead} instead"
        ) from err


def read_config(source: str) -> dict:
    return json.loads(resolve_file(source, CONFIG_FILE).read_text())


def backbone_from_hf(config: dict, dropout: float = 0.0, where: str = "config.json") -> BackboneConfig:
    """Our ``BackboneConfig`` for an HF GPT-2 config, or a ValueError if it is not plain GPT-2."""
    if config.get("model_type") != "gpt2":
        raise ValueError(f"{where}: model_type is {config.get('model_type')!r}, expected 'gpt2'")
    checks = {
        "activation_function": ("gelu_new", "gelu_pytorch_tanh"),
        "scale_attn_weights": (True,),
        "scale_attn_by_inverse_layer_idx": (False,),
        "reorder_and_upcast_attn": (False,),
        "layer_norm_epsilon": (1e-5,),
        "tie_word_embeddings": (True,),
    }
    defaults = {"activation_function": "gelu_new", "scale_attn_weights": True,
                "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
                "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True}
    for key, allowed in checks.items():
        value = config.get(key, defaults[key])
        if value not in allowed:
            raise ValueError(f"{where}: {key} is {value!r}; this backbone supports {allowed}")
    n_inner = config.get("n_inner")
    if n_inner not in (None, 4 * config["n_embd"]):
        raise ValueError(f"{where}: n_inner is {n_inner}; this backbone uses 4 * n_embd")
    return BackboneConfig(n_layer=config["n_layer"], n_head=config["n_head"],
                          n_embd=config["n_embd"], block_size=config["n_positions"],
                          dropout=dropout, bias=True, tie_embeddings=True)


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # GPT2LMHeadModel saves "transformer.h.0...", the hub's GPT2Model files "h.0...".
    out = {}
    for key, value in state.items():
        if key.startswith("transformer."):
            key = key[len("transformer."):]
        out[key] = value
    return out


def hf_to_ours(state: dict[str, torch.Tensor], n_layer: int, where: str) -> dict[str, torch.Tensor]:
    """Our backbone's state dict from an HF GPT-2 one."""
    state = _strip_prefix(state)
    out = {}
    missing = []

    def take(hf_key: str, transpose: bool) -> torch.Tensor | None:
        if hf_key not in state:
            missing.append(hf_key)
            return None
        t = state[hf_key]
        return t.t().contiguous() if transpose else t

    for ours, hf in _TOP_MAP.items():
        out[ours] = take(hf, False)
    for i in range(n_layer):
        for ours, (hf, transpose) in _BLOCK_MAP.items():
            out[f"blocks.{i}.{ours}"] = take(f"h.{i}.{hf}", transpose)
    if missing:
        raise ValueError(f"{where} lacks GPT-2 weights: {', '.join(missing[:5])}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    if "lm_head.weight" in state and not torch.equal(state["lm_head.weight"], state["wte.weight"]):
        raise ValueError(f"{where}: lm_head.weight differs from wte.weight; this backbone ties them")
    return out


def load_gpt2_weights(model: GPT, source: str) -> None:
    """Copy the GPT-2 weights of ``source`` into ``model`` (shapes must agree)."""
    path = resolve_file(source, WEIGHTS_FILE)
    state = hf_to_ours(load_file(str(path)), model.config.n_layer, str(path))
    own = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            if own[name].shape != value.shape:
                raise ValueError(
                    f"{path}: {name} has shape {tuple(value.shape)}, the model expects "
                    f"{tuple(own[name].shape)} (vocab_size or block_size differ?)"
                )
            own[name].copy_(value)


def save_gpt2(model: GPT, directory: str | Path) -> Path:
    """Write ``model``'s backbone as an HF GPT-2 checkpoint (config.json + model.safetensors).

    Only the plain parts (1-gram embedding, positions, blocks) are written: n-gram tables have
    no place in GPT-2's format.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    c = model.config
    if not (c.bias and c.tie_embeddings):
        raise ValueError("only a backbone with bias=True and tie_embeddings=True is GPT-2")
    own = dict(model.named_parameters())
    state = {hf: own[ours].detach().contiguous() for ours, hf in _TOP_MAP.items()}
    for i in range(c.n_layer):
        for ours, (hf, transpose) in _BLOCK_MAP.items():
            t = own[f"blocks.{i}.{ours}"].detach()
            state[f"h.{i}.{hf}"] = (t.t() if transpose else t).contiguous()
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    config = {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        "vocab_size": model.vocab_size, "n_positions": c.block_size, "n_embd": c.n_embd,
        "n_layer": c.n_layer, "n_head": c.n_head, "n_inner": None,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout,
        "scale_attn_weights": True, "tie_word_embeddings": True,
    }
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    return directory


_SHAPE = ("n_layer", "n_head", "n_embd", "block_size")


def pretrained_backbone(source: str, given: BackboneConfig, vocab_size: int) -> BackboneConfig:
    """The backbone of checkpoint ``source``; ``given`` only contributes its dropout.

    A ``given`` shape that is neither the default nor the checkpoint's is a conflicting config.
    """
    config = read_config(source)
    where = f"{source}/{CONFIG_FILE}"
    backbone = backbone_from_hf(config, dropout=given.dropout, where=where)
    if config["vocab_size"] != vocab_size:
        raise ValueError(
            f"{where}: vocab_size is {config['vocab_size']} but the data's tokenizer has "
            f"{vocab_size} ids; use the checkpoint's own tokenizer (data tokenizer: {source})"
        )
    default = BackboneConfig()
    for name in _SHAPE:
        value = getattr(given, name)
        if value not in (getattr(default, name), getattr(backbone, name)):
            raise ValueError(
                f"model.backbone.{name} is {value} but the pretrained checkpoint {source} has "
                f"{getattr(backbone, name)}; leave model.backbone's shape unset with model.pretrained"
            )
    return backbone


def freeze_all_but_ngrams(model: GPT) -> int:
    """Freeze every parameter of ``model`` but its n-gram part; returns the trainable count.

    The n-gram part is everything of the input embedding beside the 1-gram table ``token``
    (tables, and for Over-Encoding its projection).
    """
    keep = {id(p) for name, p in model.embedding.named_parameters() if not name.startswith("token.")}
    if not keep:
        raise ValueError("model.freeze_backbone needs n-gram tables to train "
                         "(set model.over_encoding or model.frequent_ngrams)")
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

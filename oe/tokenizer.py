"""Tokenizers of text models: load one, fingerprint it, check it fits a model's vocabulary."""

from __future__ import annotations

from pathlib import Path

from oe.models.pretrained import TOKENIZER_FILE, resolve_file


def load_tokenizer(source: str):
    """A ``tokenizers.Tokenizer`` from a ``tokenizer.json`` file, a directory holding one, or a hub id."""
    from tokenizers import Tokenizer

    path = Path(source)
    if path.is_file():
        return Tokenizer.from_file(str(path))
    if path.is_dir():
        if not (path / TOKENIZER_FILE).is_file():
            raise FileNotFoundError(f"{path / TOKENIZER_FILE} not found: the tokenizer directory "
                                    "needs a tokenizer.json (tokenizers' Tokenizer.save)")
        return Tokenizer.from_file(str(path / TOKENIZER_FILE))
    if source.startswith((".", "/")):
        raise FileNotFoundError(f"tokenizer {source} not found (a tokenizer.json, a directory "
                                "holding one, or a hub id such as 'gpt2')")
    try:
        return Tokenizer.from_file(str(resolve_file(source, TOKENIZER_FILE)))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"tokenizer {source!r}: {err}") from err


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of the vocabulary and merges: equal fingerprints tokenise alike."""
    import hashlib

    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()[:16]


def check_tokenizer_matches(tokenizer, vocab_size: int, what: str) -> None:
    """A ValueError unless ``tokenizer`` can feed a model with ``vocab_size`` ids."""
    n = tokenizer.get_vocab_size()
    if n != vocab_size:
        raise ValueError(
            f"the tokenizer has {n} ids but {what} has vocab_size {vocab_size}: it is not the "
            "tokenizer this model was trained with; pass the matching one (--tokenizer)"
        )

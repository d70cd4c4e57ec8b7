"""Tokenizers of text models: load one, fingerprint it, check it fits a model's vocabulary.

A checkpoint carries its tokenizer (``tokenizer_json``: the whole ``tokenizer.json``), so that it
reads text from any working folder; ``recorded_tokenizer`` loads it, or the file older
checkpoints name.
"""

from __future__ import annotations

from pathlib import Path

from oe.models.pretrained import TOKENIZER_FILE, resolve_file


def load_tokenizer(source: str):
    """A ``tokenizers.Tokenizer`` from a ``tokenizer.json`` file, a directory holding one, or a hub id."""
    from tokenizers import Tokenizer

    path = Path(source)
    if path.is_dir():
        if not (path / TOKENIZER_FILE).is_file():
            raise FileNotFoundError(f"{path / TOKENIZER_FILE} not found: the tokenizer directory "
                                    "needs a tokenizer.json (tokenizers' Tokenizer.save)")
        path = path / TOKENIZER_FILE
    if path.is_file():
        try:
            return Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises a bare Exception for a bad file
            raise ValueError(f"tokenizer {path} cannot be read ({str(err).splitlines()[0]}): "
                             f"truncated, or not a tokenizer.json") from err
    if source.startswith((".", "/")):
        raise FileNotFoundError(f"tokenizer {source} not found (a tokenizer.json, a directory "
                                "holding one, or a hub id such as 'gpt2')")
    try:
        return Tokenizer.from_file(str(resolve_file(source, TOKENIZER_FILE)))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"tokenizer {source!r}: {err}") from err


def tokenizer_record(tokenizer, source: str | Path) -> dict[str, str]:
    """What a checkpoint records of ``tokenizer``: itself, where it came from, its fingerprint."""
    path = Path(source)
    return {"tokenizer_json": tokenizer.to_str(),
            "tokenizer_file": str(path.resolve()) if path.exists() else str(source),
            "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer)}


def recorded_tokenizer(record: dict | None, where: str):
    """The tokenizer a checkpoint's record carries (or, in older ones, names); None without one."""
    from tokenizers import Tokenizer

    record = record or {}
    if record.get("tokenizer_json"):
        try:
            return Tokenizer.from_str(record["tokenizer_json"])
        except Exception as err:  # tokenizers raises a bare Exception
            raise ValueError(f"{where}: its recorded tokenizer cannot be read "
                             f"({str(err).splitlines()[0]})") from err
    source = record.get("tokenizer_file")
    if source is None:
        return None
    try:
        return load_tokenizer(source)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{where} names its tokenizer {source}, which is not there "
                                f"(a relative path is read from the working folder, "
                                f"{Path.cwd()}): run from the folder it was trained in, or give "
                                f"--tokenizer") from err


def checkpoint_tokenizer(record: dict | None, given: str | None, vocab_size: int, where: str):
    """The tokenizer to read a checkpoint's text with: ``given`` (a source), else the one its
    record carries or names; checked against the model's vocabulary and the recorded
    fingerprint. None when there is neither."""
    record = record or {}
    tokenizer = load_tokenizer(given) if given else recorded_tokenizer(record, where)
    if tokenizer is None:
        return None
    check_tokenizer_matches(tokenizer, vocab_size, where)
    recorded = record.get("tokenizer_fingerprint")
    if recorded is not None and recorded != tokenizer_fingerprint(tokenizer):
        raise ValueError(f"tokenizer {given or record.get('tokenizer_file')} is not the one "
                         f"{where} was trained with (fingerprint "
                         f"{tokenizer_fingerprint(tokenizer)} != {recorded})")
    return tokenizer


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

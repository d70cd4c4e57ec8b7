"""A checkpoint carries its tokenizer: it reads text from any working folder."""

from __future__ import annotations

import os

import pytest
import torch

from oe.distributed.checkpoint import TOKENIZER_KEY
from oe.huggingface.load import load_model
from oe.tokenizer import load_tokenizer, tokenizer_fingerprint, tokenizer_record
from tests.huggingface.conftest import save_checkpoint


def test_a_checkpoint_reads_text_from_another_working_folder(tmp_path, tokenizer_dir,
                                                            monkeypatch) -> None:
    ckpt = save_checkpoint(tmp_path / "model.ckpt", tokenizer_dir / "tokenizer.json", None)
    checkpoint = torch.load(ckpt, weights_only=False)
    tokenizer = load_tokenizer(str(tokenizer_dir / "tokenizer.json"))
    monkeypatch.chdir(tokenizer_dir.parent)
    relative = os.path.relpath(tokenizer_dir / "tokenizer.json")
    older = dict(checkpoint, **{TOKENIZER_KEY: {
        "tokenizer_file": relative, "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer)}})
    torch.save(older, tmp_path / "older.ckpt")
    checkpoint[TOKENIZER_KEY] = tokenizer_record(tokenizer, relative)
    assert checkpoint[TOKENIZER_KEY]["tokenizer_file"] == str(tokenizer_dir / "tokenizer.json")
    torch.save(checkpoint, ckpt)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (tokenizer_dir / "tokenizer.json").rename(tmp_path / "moved.json")  # not even the file
    try:
        _, loaded = load_model(ckpt)
        assert tokenizer_fingerprint(loaded) == tokenizer_fingerprint(tokenizer)
        # A checkpoint that only names a relative path says where it looked and what to do.
        with pytest.raises(FileNotFoundError) as caught:
            load_model(tmp_path / "older.ckpt")
        assert str(caught.value) == (
            f"the checkpoint {tmp_path / 'older.ckpt'} names its tokenizer {relative}, which is "
            f"not there (a relative path is read from the working folder, {elsewhere}): run from "
            f"the folder it was trained in, or give --tokenizer")
    finally:
        (tmp_path / "moved.json").rename(tokenizer_dir / "tokenizer.json")

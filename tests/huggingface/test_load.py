"""The model loader: a checkpoint of oe fit loads as the trained network with its tokenizer
record, and reads text from any working folder."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from oe.cli.evaluate import load_checkpoint
from oe.distributed.checkpoint import TOKENIZER_KEY
from oe.huggingface.load import load_for_evaluation, load_model
from oe.models.embedding import OverEncodingConfig
from oe.models.gpt import BackboneConfig
from oe.training.lm import LanguageModel
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


# -- a checkpoint written by a Lightning fit ----------------------------------------------------

VOCAB = 11
TINY = BackboneConfig(n_layer=1, n_head=2, n_embd=16, block_size=32)


class _Tokens(L.LightningDataModule):
    """Random token rows."""

    def train_dataloader(self) -> DataLoader:
        rows = torch.randint(1, VOCAB, (4, 2, 13), generator=torch.Generator().manual_seed(2))
        return DataLoader([{"input_ids": r} for r in rows], batch_size=None)


class _NamedTokens(_Tokens):
    """The same rows; names its tokenizer as a text data module does (TokenizerRecord)."""

    def __init__(self, record: dict[str, str]) -> None:
        super().__init__()
        self.record = record

    def tokenizer_record(self) -> dict[str, str]:
        return dict(self.record)


def _fit(model: LanguageModel, record: dict[str, str] | None, tmp_path: Path) -> Path:
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=_Tokens() if record is None else _NamedTokens(record))
    path = tmp_path / "run.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.mark.parametrize("kind", ["baseline", "plain tables"])
def test_evaluation_loads_the_trained_network_and_tokenizer_record(kind: str, tmp_path) -> None:
    model = (LanguageModel(vocab_size=VOCAB, backbone=TINY) if kind == "baseline"
             else LanguageModel(vocab_size=VOCAB, backbone=TINY,
                                over_encoding=OverEncodingConfig(orders=[2, 3], modulus=101,
                                                                 shard_tables=False)))
    record = {"tokenizer_file": "some/tokenizer.json", "tokenizer_fingerprint": "abc"}
    path = _fit(model, record, tmp_path)
    assert torch.load(path, weights_only=False)[TOKENIZER_KEY] == record
    loaded, loaded_record = load_for_evaluation(path)
    assert loaded_record == record
    tokens = torch.randint(1, VOCAB, (2, 9), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(loaded.eval()(tokens), model.model.eval()(tokens))


def test_a_checkpoint_without_a_tokenizer_record_needs_one_given(tmp_path) -> None:
    path = _fit(LanguageModel(vocab_size=VOCAB, backbone=TINY), None, tmp_path)
    assert TOKENIZER_KEY not in torch.load(path, weights_only=False)
    assert load_for_evaluation(path)[1] is None
    with pytest.raises(ValueError, match="records no tokenizer .*pass --tokenizer"):
        load_checkpoint(str(path))
    with pytest.raises(FileNotFoundError, match="not found"):
        load_for_evaluation(tmp_path / "none.ckpt")

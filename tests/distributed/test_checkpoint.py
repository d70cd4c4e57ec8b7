"""oe.distributed.checkpoint: table signatures, the tokenizer record, export, loading for evaluation."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from oe.cli.evaluate import load_checkpoint
from oe.cli.export import main as export_main
from oe.distributed.checkpoint import (TABLE_KEY, TOKENIZER_KEY, check_tables, load_for_evaluation,
                                       table_signature)
from oe.models.embedding import OverEncodingConfig
from oe.models.gpt import BackboneConfig
from oe.training.lm import LanguageModel, OptimizerConfig

VOCAB = 11
TINY = BackboneConfig(n_layer=1, n_head=2, n_embd=16, block_size=32)


def _model(modulus: int = 101, vocab: int = VOCAB, k: int = 2, **over_encoding) -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(vocab_size=vocab, backbone=TINY,
                         over_encoding=OverEncodingConfig(orders=[2, 3], k=k, modulus=modulus,
                                                          **over_encoding),
                         optimizer=OptimizerConfig(lr=1e-2, warmup_steps=0))


@pytest.mark.parametrize("other,field", [(dict(modulus=103), "modulus"), (dict(k=1), "k"),
                                         (dict(vocab=13), "vocab_size")])
def test_a_checkpoint_of_other_tables_is_refused(other: dict, field: str, tmp_path) -> None:
    path = tmp_path / "x.ckpt"
    checkpoint = {TABLE_KEY: table_signature(_model(**other)), "state_dict": {}}
    model = _model()
    with pytest.raises(ValueError, match=f"{field}: checkpoint"):
        check_tables(checkpoint, model, path)
    ours = {TABLE_KEY: table_signature(_model()), "state_dict": {}}
    with pytest.raises(ValueError, match="table folder .* is missing"):
        check_tables(ours, model, path)
    (tmp_path / "x.ckpt.tables").mkdir()
    (tmp_path / "x.ckpt.tables" / ".metadata").touch()
    with pytest.raises(ValueError, match="table index .* cannot be read"):
        check_tables(ours, model, path)


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
             else _model(shard_tables=False))
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


# -- export of a checkpoint written by two ranks ------------------------------------------------

@pytest.fixture(scope="module")
def two_rank_step(tmp_path_factory) -> Path:
    from tests.distributed.test_parallelize_two_ranks import launch

    out = tmp_path_factory.mktemp("export")
    launch(2, out, "step")
    return out


@pytest.mark.distributed
def test_export_gives_a_single_device_checkpoint_with_identical_logits(two_rank_step: Path) -> None:
    from tests.distributed.sharding_worker import probe_tokens

    runs = two_rank_step
    direct, _ = load_for_evaluation(runs / "step_w2.ckpt")  # the table folder, read in one process
    out = runs / "exported.ckpt"
    assert export_main([str(runs / "step_w2.ckpt"), str(out)]) == 0
    written = out.read_bytes()
    assert export_main([str(runs / "step_w2.ckpt"), str(out)]) == 2  # never overwrites unasked
    assert out.read_bytes() == written
    state = torch.load(out, weights_only=False)["state_dict"]
    assert state["model.embedding.ngram.embeddings.ngram3_1.weight"].shape == (107, 4)
    expected = torch.load(runs / "step_w2.pt")["after"]
    model = LanguageModel.load_from_checkpoint(out, weights_only=False).eval()
    network, _ = load_for_evaluation(out)
    torch.set_num_threads(1)
    with torch.no_grad():
        assert torch.equal(model(probe_tokens()), expected)
        assert torch.equal(network.eval()(probe_tokens()), expected)
        assert torch.equal(direct.eval()(probe_tokens()), expected)

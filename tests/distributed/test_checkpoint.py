"""oe.distributed.checkpoint: table signatures and the export of a two-rank checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from oe.cli.export import main as export_main
from oe.distributed.checkpoint import TABLE_KEY, CheckpointError, checkpoint_problem
from oe.distributed.table_state import check_tables, table_signature
from oe.huggingface.load import load_for_evaluation
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


def test_a_checkpoint_is_complete_only_with_its_table_folder(tmp_path) -> None:
    empty = tmp_path / "empty.ckpt"
    empty.touch()
    assert "is empty (0 bytes)" in checkpoint_problem(empty)
    dense = tmp_path / "dense.ckpt"
    torch.save({"state_dict": {}}, dense)
    assert checkpoint_problem(dense) is None
    sharded = tmp_path / "sharded.ckpt"
    torch.save({"state_dict": {}, TABLE_KEY: table_signature(_model())}, sharded)
    assert "table folder" in checkpoint_problem(sharded) and "is missing" in checkpoint_problem(sharded)


def test_a_checkpoint_without_hyper_parameters_is_named_by_every_reader(tmp_path) -> None:
    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": {}}, bare)
    with pytest.raises(CheckpointError, match=f"checkpoint {bare} records no hyper_parameters"):
        load_for_evaluation(bare)
    assert export_main(["--format", "hf", str(bare), str(tmp_path / "hf")]) == 2


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

"""The sharding of the n-gram tables, in one process without a process group.

The two-process behaviour (sharded forward, fused step, checkpoints) is in
tests/distributed/test_parallelize_two_ranks.py.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_language_model
from oe.models.embedding import (ROW_BLOCK, OverEncoding, OverEncodingConfig, deferred_ngram_tables,
                          table_rows)
from oe.training.lm import LanguageModel
from oe.models.gpt import BackboneConfig
from oe.distributed.parallelize import check_world_size, fused_params, row_split, state_floats_per_row
from oe.cli.plan import main as plan_main


@pytest.mark.parametrize("world", [1, 2, 3, 7])
def test_initial_rows_do_not_depend_on_the_split(world: int) -> None:
    rows, width = 2 * ROW_BLOCK + 5, 3
    whole = table_rows(seed=5, table=1, start=0, stop=rows, width=width, std=0.02)
    shards = [table_rows(5, 1, start, start + n, width, 0.02)
              for start, n in row_split(rows, world)]
    assert torch.equal(torch.cat(shards), whole)
    if world > 1:  # never identical shards
        assert not torch.equal(shards[0][: len(shards[-1])], shards[-1])
    assert abs(float(whole.std()) - 0.02) < 1e-3
    assert not torch.equal(whole, table_rows(5, 2, 0, rows, width, 0.02))  # tables differ


def test_over_encoding_tables_are_drawn_from_the_keyed_generator() -> None:
    torch.manual_seed(0)
    embedding = OverEncoding(6, 16, OverEncodingConfig(orders=[2, 3], k=2, modulus=101))
    for index, t in enumerate(embedding.tables):
        expected = table_rows(embedding.table_seed, index, 0, t.modulus, t.width, 0.02)
        assert torch.equal(embedding.ngram.embeddings[t.name].weight.detach(), expected)


def test_a_meta_device_model_holds_no_table_memory() -> None:
    with torch.device("meta"):
        model = LanguageModel(vocab_size=50257, backbone=BackboneConfig(n_layer=1, n_embd=64),
                              over_encoding=OverEncodingConfig(modulus=50_000_001))
    assert all(p.is_meta for p in model.parameters())


def test_row_split_covers_every_row_once() -> None:
    for rows in (1, 5, 101, 12_800_001):
        for world in (1, 2, 3, 64):
            if world > rows:
                continue
            split = row_split(rows, world)
            assert split[0][0] == 0 and sum(n for _, n in split) == rows
            assert all(a + n == b for (a, n), (b, _) in zip(split, split[1:]))


def test_a_world_size_that_leaves_a_rank_without_rows_is_one_clear_error() -> None:
    check_world_size({"ngram2_0": 6}, 3)
    with pytest.raises(ValueError, match=r"ngram2_0 has 5 rows.*4 ranks.*at most 3 ranks"):
        check_world_size({"ngram2_0": 5}, 4)


def test_fused_optimisers_by_device() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    for name in ("rowwise_adagrad", "adagrad", "sgd"):
        assert fused_params(name, 0.1, 0.0, cpu)["learning_rate"] == 0.1
    assert "beta1" in fused_params("adam", 0.1, 0.0, gpu)  # settings only: no GPU needed
    with pytest.raises(ValueError, match="table_optimizer 'adam' needs a GPU"):
        fused_params("adam", 0.1, 0.0, cpu)
    with pytest.raises(ValueError, match="table_optimizer must be one of"):
        fused_params("lamb", 0.1, 0.0, cpu)


@pytest.mark.parametrize("optimizer", ["sgd", "rowwise_adagrad", "adagrad"])
def test_state_per_row_is_what_the_fused_optimizer_keeps(optimizer: str) -> None:
    """``oe plan``'s optimiser state per row is what TorchRec's fused optimiser holds for a
    sharded table after a training step."""
    import lightning as L

    from oe.distributed.parallelize import sharded_collections

    model = tiny_language_model(11, OverEncodingConfig(orders=[2, 3], k=2, modulus=101,
                                                       table_optimizer=optimizer))
    batches = [{"input_ids": torch.randint(1, 11, (2, 9), generator=torch.Generator().manual_seed(0))}]
    L.Trainer(accelerator="cpu", devices=1, max_steps=1, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False).fit(
        model, torch.utils.data.DataLoader(batches, batch_size=None))
    (collection,) = sharded_collections(model).values()
    state = collection.fused_optimizer.state_dict()["state"]
    for table in model.model.embedding.tables:
        held = sum(shard.tensor.numel()  # this (only) rank's shards: what it holds
                   for t in state.get(f"embeddings.{table.name}.weight", {}).values()
                   for shard in t.local_shards())
        assert held == table.modulus * state_floats_per_row(optimizer, table.width), table.name


def test_adams_state_per_row_is_its_two_moments() -> None:
    """Adam's fused tables are GPU-only; its figure is torch's Adam state on a table."""
    table = torch.nn.Embedding(7, 5)
    adam = torch.optim.Adam(table.parameters())
    table(torch.tensor([1, 2])).sum().backward()
    adam.step()
    held = sum(t.numel() for t in adam.state[table.weight].values() if t.dim() > 0)
    assert held == 7 * state_floats_per_row("adam", 5)


def test_plan_at_the_papers_scale(capsys) -> None:
    code = plan_main(["--config", "configs/cfg_oe3.yaml", "--world-size", "64", "--modulus",
                      "12800001", "--n-embd", "2048", "--n-head", "16", "--vocab-size", "50257"])
    assert code == 0
    out = capsys.readouterr().out
    # 2 tables of 12.8M rows x 1024: ceil(m / 64) = 200,001 rows each on the busiest rank,
    # 400,002 x 1024 x 4 bytes = 1.53 GiB; RowWiseAdagrad adds one float per row.
    assert "400,002" in out and "25,600,004" in out
    assert "n-gram table                                    1.53 GiB       97.66 GiB" in out
    assert "rowwise_adagrad (sharded default)      1.53 MiB" in out


def test_plan_refuses_an_unsplittable_world_size(capsys) -> None:
    code = plan_main(["--config", "configs/cfg_oe3.yaml", "--world-size", "2000",
                      "--vocab-size", "6"])
    assert code == 2
    assert "cannot be split row-wise over 2000 ranks" in capsys.readouterr().err


def test_oe_fit_builds_sharded_tables_without_values() -> None:
    backbone = BackboneConfig(n_layer=1, n_head=2, n_embd=16, block_size=32)
    with deferred_ngram_tables():  # as oe.cli.fit instantiates the model
        huge = LanguageModel(vocab_size=50257, backbone=backbone,
                             over_encoding=OverEncodingConfig(modulus=50_000_001))
    assert all(p.is_meta for p in huge.table_parameters())  # 2 x 50M rows, no memory
    config = OverEncodingConfig(orders=[2, 3], modulus=100_003)
    torch.manual_seed(4)
    with deferred_ngram_tables():
        deferred = LanguageModel(vocab_size=50257, backbone=backbone, over_encoding=config)
    torch.manual_seed(4)
    eager = LanguageModel(vocab_size=50257, backbone=backbone, over_encoding=config)
    # Everything else is drawn exactly as without deferral, the keyed table seed too, from which
    # oe.distributed.parallelize draws each rank's rows: the same values as the eager tables.
    assert deferred.model.embedding.table_seed == eager.model.embedding.table_seed
    tables = {id(p) for p in eager.table_parameters()}
    dense = [(n, p) for n, p in eager.named_parameters() if id(p) not in tables]
    deferred_params = dict(deferred.named_parameters())
    assert all(torch.equal(p, deferred_params[n]) for n, p in dense)
    with deferred_ngram_tables():
        small = LanguageModel(vocab_size=6, backbone=backbone,
                              over_encoding=OverEncodingConfig(modulus=1009, shard_tables=False))
    assert not any(p.is_meta for p in small.table_parameters())  # trained by AdamW: real

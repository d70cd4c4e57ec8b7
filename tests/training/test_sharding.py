"""oe.training.sharding: a run shards its tables only for fit, and only with a strategy that
checkpoints them."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader
from torchrec.distributed.embedding import ShardedEmbeddingCollection

from oe.training.strategy import ShardedTableStrategy
from oe.models.embedding import OverEncodingConfig
from tests.conftest import tiny_backbone, tiny_language_model


def _model(shard_tables: bool = True):
    return tiny_language_model(11, OverEncodingConfig(orders=[2, 3], modulus=101,
                                                      shard_tables=shard_tables),
                               backbone=tiny_backbone(block_size=1024))


def _trainer(tmp_path, **fields) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, max_steps=1, logger=False,
                     enable_progress_bar=False, enable_model_summary=False,
                     default_root_dir=tmp_path, **fields)


BATCHES = [{"input_ids": torch.randint(1, 11, (2, 9), generator=torch.Generator().manual_seed(i))}
           for i in range(2)]


def test_training_sharded_tables_with_a_lossy_checkpointing_strategy_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="checkpointed only by trainer.strategy"):
        _trainer(tmp_path).fit(_model(), DataLoader(BATCHES, batch_size=None))


def test_fit_shards_the_tables_and_hides_them_from_ddp(tmp_path) -> None:
    model = _model()
    _trainer(tmp_path, strategy=ShardedTableStrategy()).fit(model, DataLoader(BATCHES, batch_size=None))
    assert isinstance(model.model.embedding.ngram, ShardedEmbeddingCollection)
    ignored = model._ddp_params_and_buffers_to_ignore
    assert ignored and all(name.startswith("model.embedding.ngram.") for name in ignored)


def test_plain_tables_and_other_stages_leave_the_tables_be(tmp_path) -> None:
    plain = _model(shard_tables=False)
    _trainer(tmp_path).fit(plain, DataLoader(BATCHES, batch_size=None))
    assert not isinstance(plain.model.embedding.ngram, ShardedEmbeddingCollection)
    sharded = _model()
    _trainer(tmp_path).validate(sharded, DataLoader(BATCHES, batch_size=None))
    assert not isinstance(sharded.model.embedding.ngram, ShardedEmbeddingCollection)

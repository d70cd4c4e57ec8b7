"""The Lightning wiring of sharded n-gram tables: when and with which settings a run shards them.

``oe.distributed.parallelize`` shards an embedding's tables given the settings and a device; this
module reads those settings from the LightningModule (its Over-Encoding config and dense
optimiser) and the trainer's state, checks that the strategy checkpoints what sharding creates,
and tells DDP to leave the sharded tables alone. ``LanguageModel.configure_model`` calls it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lightning as L

from oe.distributed.parallelize import (TableSharding, shard_embedding, table_betas, table_lr,
                                        table_optimizer, table_parameter_names)
from oe.training.strategy import ShardedTableStrategy

if TYPE_CHECKING:
    from oe.training.lm import LanguageModel


def shard_tables_for_fit(lm: LanguageModel, trainer: L.Trainer | None) -> None:
    """Shard ``lm``'s Over-Encoding tables for training by ``trainer``, or leave them be.

    Training shards the tables row-wise over all ranks (one rank too), their optimiser fused into
    the backward pass, and tells DDP to leave them alone. Outside fit (evaluation, generation),
    and with ``over_encoding.shard_tables`` false, the plain tables serve.
    """
    config = lm.over_encoding
    if config is None or not config.shard_tables or trainer is None or trainer.state.fn != "fit":
        return
    if trainer.checkpoint_callbacks and not isinstance(trainer.strategy, ShardedTableStrategy):
        raise ValueError(
            "sharded n-gram tables are checkpointed only by trainer.strategy "
            "oe.training.strategy.ShardedTableStrategy (the OE configs' default); with "
            f"{type(trainer.strategy).__name__} the table optimiser state (and on several "
            "ranks, other ranks' rows) would be lost. Set that strategy, or "
            "model.over_encoding.shard_tables false for small tables"
        )
    dense = lm.optimizer_config
    sharding = TableSharding(
        optimizer=table_optimizer(config), lr=table_lr(config, dense.lr),
        weight_decay=config.table_weight_decay, seed=lm.model.embedding.table_seed,
        init_std=config.init_std, betas=table_betas(config, dense.betas),
    )
    shard_embedding(lm.model.embedding, sharding, lm.device)
    lm._ddp_params_and_buffers_to_ignore = table_parameter_names(lm)

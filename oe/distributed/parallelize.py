"""The sharding of the n-gram tables: row-wise shards on every rank, optimiser in backward.

The model (``oe.models.embedding.OverEncoding``) holds its n-gram tables as one TorchRec
``EmbeddingCollection`` and knows nothing of ranks. Training replaces that collection with a
``ShardedEmbeddingCollection``: every table is split by rows over all ranks of the default process
group (one rank included, so a single process runs the very same code), ids travel to the rank
that owns their row, and FBGEMM updates the touched rows inside the backward pass. The dense
optimiser therefore never sees the tables, and a step costs the same whatever the number of rows.

Initial values come from a generator keyed by (seed, table, row block), never by rank: a table
sharded over any number of ranks starts from the same values, and no two shards are alike.

Nothing here knows of Lightning: ``shard_embedding`` shards an embedding given its settings
(``TableSharding``) and a device; when a run shards, and with which settings, is decided in
``oe.training.sharding``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torchrec import EmbeddingCollection
from torchrec.distributed.embedding import EmbeddingCollectionSharder, ShardedEmbeddingCollection
from torchrec.distributed.sharding_plan import construct_module_sharding_plan, row_wise
from torchrec.distributed.types import ShardingEnv

from oe.models.embedding import OverEncoding, OverEncodingConfig, table_rows

TABLE_OPTIMIZERS = ("rowwise_adagrad", "adagrad", "sgd", "adam")  # fused, for sharded tables
PLAIN_TABLE_OPTIMIZERS = ("adamw", "sgd")  # for tables that stay ordinary parameters
GPU_ONLY_OPTIMIZERS = ("adam",)
# What the tables' optimiser group can set, by optimiser: FBGEMM's exact SGD and Adagrad have no
# weight decay (it would be ignored); of the fused kernels only Adam has betas.
WEIGHT_DECAY_OPTIMIZERS = ("adamw", "rowwise_adagrad", "adam")
BETAS_OPTIMIZERS = ("adamw", "adam")


def state_floats_per_row(optimizer: str, width: int) -> int:
    """Optimiser state kept per table row, in floats: what ``oe.analysis.memory_plan`` and the README quote."""
    per_row = {"sgd": 0, "rowwise_adagrad": 1, "adagrad": width, "adam": 2 * width}
    if optimizer not in per_row:
        raise ValueError(
            f"over_encoding.table_optimizer must be one of {', '.join(TABLE_OPTIMIZERS)}, "
            f"got {optimizer!r}"
        )
    return per_row[optimizer]


def fused_params(optimizer: str, lr: float, weight_decay: float, device: torch.device,
                 betas: tuple[float, float] = (0.9, 0.999)) -> dict:
    """FBGEMM's fused-optimiser settings, or one ValueError naming the field."""
    from fbgemm_gpu.split_embedding_configs import EmbOptimType

    state_floats_per_row(optimizer, 1)  # validates the name
    if optimizer in GPU_ONLY_OPTIMIZERS and device.type != "cuda":
        raise ValueError(
            f"over_encoding.table_optimizer {optimizer!r} needs a GPU: FBGEMM has no fused "
            f"{optimizer} on {device.type}; choose rowwise_adagrad, adagrad or sgd"
        )
    if lr <= 0:
        raise ValueError(f"over_encoding.table_lr must be > 0, got {lr}")
    kinds = {"sgd": EmbOptimType.EXACT_SGD, "adagrad": EmbOptimType.EXACT_ADAGRAD,
             "rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "adam": EmbOptimType.ADAM}
    params = {"optimizer": kinds[optimizer], "learning_rate": lr, "eps": 1e-8,
              "weight_decay": weight_decay}
    if optimizer == "rowwise_adagrad" and weight_decay:
        # Decoupled, as AdamW decays: without a mode FBGEMM's row-wise Adagrad ignores the decay.
        from fbgemm_gpu.tbe.config.optimizer_config import WeightDecayMode

        params["weight_decay_mode"] = WeightDecayMode.DECOUPLE
    if optimizer == "adam":
        params.update(beta1=betas[0], beta2=betas[1])
    return params


def table_optimizer(config: OverEncodingConfig) -> str:
    """The optimiser ``config``'s tables train with, or one ValueError naming the field (the
    optimiser, or a setting of the tables' group that it cannot apply)."""
    chosen = config.table_optimizer
    if config.shard_tables:
        chosen = chosen or "rowwise_adagrad"
        allowed, where = TABLE_OPTIMIZERS, "sharded tables (shard_tables true)"
    else:
        chosen = chosen or "adamw"
        allowed, where = PLAIN_TABLE_OPTIMIZERS, "plain tables (shard_tables false)"
    if chosen not in allowed:
        raise ValueError(f"over_encoding.table_optimizer {chosen!r} does not train {where}; "
                         f"choose one of {', '.join(allowed)}")
    if config.table_weight_decay and chosen not in WEIGHT_DECAY_OPTIMIZERS:
        raise ValueError(
            f"over_encoding.table_weight_decay {config.table_weight_decay} cannot apply: the "
            f"tables' optimiser {chosen!r} ({where}) has no weight decay; set it to 0, or choose "
            f"table_optimizer {' or '.join(o for o in WEIGHT_DECAY_OPTIMIZERS if o in allowed)}")
    if config.table_betas is not None and chosen not in BETAS_OPTIMIZERS:
        raise ValueError(
            f"over_encoding.table_betas {list(config.table_betas)} cannot apply: the tables' "
            f"optimiser {chosen!r} ({where}) has no betas; leave it null, or choose "
            f"table_optimizer {' or '.join(o for o in BETAS_OPTIMIZERS if o in allowed)}"
            + (" (GPU only)" if config.shard_tables else ""))
    return chosen


def table_lr(config, dense_lr: float) -> float:
    """The tables' peak rate (before the schedule's factor): ``table_lr``, or
    ``table_lr_multiplier`` times ``dense_lr``, or ``dense_lr``. ``config``: an
    OverEncodingConfig or a FrequentNgramConfig (which has no multiplier)."""
    multiplier = getattr(config, "table_lr_multiplier", None)
    if multiplier is not None and config.table_lr is not None:
        raise ValueError(f"over_encoding.table_lr ({config.table_lr}) and "
                         f"over_encoding.table_lr_multiplier ({multiplier}) both set the tables' "
                         "rate; set one of them")
    if multiplier is not None:
        if not multiplier > 0:
            raise ValueError(f"over_encoding.table_lr_multiplier must be > 0, got {multiplier}")
        return multiplier * dense_lr
    return config.table_lr if config.table_lr is not None else dense_lr


def table_betas(config, dense_betas: tuple[float, float]) -> tuple[float, float]:
    """The tables' Adam betas: ``table_betas``, else the dense ones; each must lie in [0, 1)."""
    betas = getattr(config, "table_betas", None)
    if betas is None:
        return tuple(dense_betas)
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ValueError(f"over_encoding.table_betas must be two numbers in [0, 1), got {betas}")
    return tuple(float(b) for b in betas)


def set_table_lr(module: nn.Module, lr: float) -> None:
    """Set the fused optimisers' rate of every sharded table under ``module`` (no update)."""
    for collection in sharded_collections(module).values():
        fused = collection.fused_optimizer
        for group in fused.param_groups:
            group["lr"] = lr
        fused.step()  # a fused optimiser's step only hands its rate to the kernel


def row_split(rows: int, world_size: int) -> list[tuple[int, int]]:
    """(first row, row count) of each rank's shard: blocks of ceil(rows / W), the last shorter."""
    block = math.ceil(rows / world_size)
    return [(min(r * block, rows), max(0, min(block, rows - r * block))) for r in range(world_size)]


def check_world_size(tables: dict[str, int], world_size: int) -> None:
    """Every rank must own rows of every table; otherwise one ValueError."""
    for name, rows in tables.items():
        empty = [r for r, (_, n) in enumerate(row_split(rows, world_size)) if n == 0]
        if empty:
            raise ValueError(
                f"n-gram table {name} has {rows} rows, which cannot be split row-wise over "
                f"{world_size} ranks (ranks {empty} would own none); use at most "
                f"{_largest_world(rows, world_size)} ranks or a larger over_encoding.modulus"
            )


def _largest_world(rows: int, below: int) -> int:
    """The largest world size under ``below`` that gives every rank rows of a ``rows`` table."""
    return next(w for w in range(min(below - 1, rows), 0, -1)
                if math.ceil(rows / w) * (w - 1) < rows)


def ensure_process_group() -> None:
    """A one-rank gloo group when none exists, so that one process shards exactly like N."""
    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)


@dataclass
class TableSharding:
    """How ``shard_tables`` shards an OverEncoding module's tables: fused optimiser and initial values."""

    optimizer: str
    lr: float
    weight_decay: float
    seed: int
    init_std: float
    betas: tuple[float, float] = (0.9, 0.999)


def shard_tables(collection: EmbeddingCollection, sharding: TableSharding,
                 device: torch.device,
                 initial_rows: Callable[[int, int, int, torch.Tensor], torch.Tensor] | None = None,
                 ) -> ShardedEmbeddingCollection:
    """``collection`` sharded row-wise over all ranks with a fused optimiser, same values.

    Rows are copied from ``collection`` when its tables are materialised, so that weights set
    before training are kept; from a meta-device collection each rank draws only its own rows,
    by ``initial_rows(table, start, stop, out)`` (default: ``table_rows`` with the sharding's
    seed and init_std).
    """
    ensure_process_group()
    world_size = dist.get_world_size()
    configs = collection.embedding_configs()
    check_world_size({c.name: c.num_embeddings for c in configs}, world_size)
    sharder = EmbeddingCollectionSharder(
        fused_params=fused_params(sharding.optimizer, sharding.lr, sharding.weight_decay, device,
                                  sharding.betas)
    )
    module_sharding = construct_module_sharding_plan(
        collection,
        per_param_sharding={c.name: row_wise(compute_kernel="fused") for c in configs},
        local_size=world_size,
        world_size=world_size,
        device_type=device.type,
        sharder=sharder,
    )
    env = ShardingEnv.from_process_group(dist.group.WORLD)
    sources = {c.name: collection.embeddings[c.name].weight for c in configs}
    sharded = sharder.shard(collection, module_sharding, env, device)
    rank = dist.get_rank()
    with torch.no_grad():
        for index, config in enumerate(configs):
            start, count = row_split(config.num_embeddings, world_size)[rank]
            local = local_shard(sharded, config.name)
            if local.shape[0] != count:
                raise RuntimeError(
                    f"TorchRec split table {config.name} unlike oe.distributed.parallelize.row_split"
                )
            source = sources[config.name]
            if source.is_meta and initial_rows is not None:
                initial_rows(index, start, start + count, local)
            elif source.is_meta:  # draw straight into the shard: no second copy of the rows
                table_rows(sharding.seed, index, start, start + count, config.embedding_dim,
                           sharding.init_std, out=local)
            else:
                local.copy_(source[start : start + count].to(local.device))
    return sharded


def local_shard(sharded: ShardedEmbeddingCollection, table: str) -> torch.Tensor:
    """This rank's rows of ``table`` (a view: writing to it changes the table)."""
    weight = sharded.state_dict()[f"embeddings.{table}.weight"]
    return weight.local_shards()[0].tensor


def sharded_collections(module: nn.Module) -> dict[str, ShardedEmbeddingCollection]:
    """Every sharded collection under ``module``, by its name there."""
    return {name: m for name, m in module.named_modules()
            if isinstance(m, ShardedEmbeddingCollection)}


def table_parameter_names(module: nn.Module) -> list[str]:
    """Names of the parameters and buffers of the sharded tables: what DDP must leave alone."""
    names = []
    for prefix, collection in sharded_collections(module).items():
        names += [f"{prefix}.{n}" for n, _ in collection.named_parameters()]
        names += [f"{prefix}.{n}" for n, _ in collection.named_buffers()]
    return names


def shard_embedding(embedding: OverEncoding, sharding: TableSharding, device: torch.device) -> None:
    """Shard ``embedding.ngram`` in place (no-op when it is sharded already)."""
    if isinstance(embedding.ngram, ShardedEmbeddingCollection):
        return
    embedding.ngram = shard_tables(embedding.ngram, sharding, device, embedding.initial_rows)


def table_owners(module: nn.Module) -> dict[str, OverEncoding]:
    """Every OverEncoding under ``module``, by the name of its table collection there."""
    return {f"{name}.ngram" if name else "ngram": m for name, m in module.named_modules()
            if isinstance(m, OverEncoding)}

"""``oe plan --config X.yaml --world_size W``: memory per rank of a sharded OE model.

Builds the config's model on the meta device (no memory, any table size) with
``oe.models.build.build_model``, splits every n-gram table row-wise over W ranks as
``oe.distributed.parallelize`` does, and prints per rank: the table rows, the fused optimiser's state for each choice, and the dense model (replicated by DDP: weights,
gradients and AdamW's two moments). fp32 throughout. ``--modulus``, ``--n_embd`` and ``--n_head``
override the config, e.g. the paper's scale:

    oe plan --config configs/cfg_oe3.yaml --world_size 64 \\
        --modulus 12800001 --n_embd 2048 --n_head 16 --vocab_size 50257

A config whose tables are plain (``shard_tables: false``) is planned as if sharded, with the
sharded tables' default optimiser, and the plan says so.
"""

from __future__ import annotations

import torch

from oe.distributed.parallelize import (TABLE_OPTIMIZERS, check_world_size, row_split, table_optimizer,
                                        state_floats_per_row, table_owners)
from oe.models.build import BuiltModel, build_arguments, build_model
from oe.models.embedding import table_size_warnings

# LongCat-Flash keeps its embedding parameters at most about half of the model: a larger share of
# n-gram tables is flagged.
TABLE_SHARE_LIMIT = 0.5

FLOAT = 4  # bytes
GIB = 1024**3


def build_on_meta(model_section: dict, vocab_size: int) -> BuiltModel:
    """The model of a config's ``model`` section, parameters on the meta device."""
    arguments = build_arguments({**model_section, "vocab_size": vocab_size})
    with torch.device("meta"):
        return build_model(**arguments)


def plan(model: BuiltModel, world_size: int) -> dict:
    """Per-rank and total figures (bytes, rows) for ``model`` on ``world_size`` ranks."""
    owners = table_owners(model.gpt)
    if not owners:
        raise ValueError("the config's model has no Over-Encoding tables (model.over_encoding)")
    table_ids = {id(p) for owner in owners.values() for p in owner.ngram.parameters()}
    # The extra output heads train with the dense parameters, replicated like them.
    parts = [model.gpt] if model.heads is None else [model.gpt, model.heads]
    dense = sum(p.numel() for part in parts for p in part.parameters() if id(p) not in table_ids)
    tables = [t for owner in owners.values() for t in owner.tables]
    check_world_size({t.name: t.modulus for t in tables}, world_size)
    rank_rows = [{t.name: row_split(t.modulus, world_size)[r][1] for t in tables}
                 for r in range(world_size)]
    busiest = max(range(world_size), key=lambda r: sum(rank_rows[r].values()))
    rows = rank_rows[busiest]
    width = {t.name: t.width for t in tables}
    return {
        "world_size": world_size,
        "table_optimizer": _fused_optimizer(next(iter(owners.values())).config),
        "tables_sharded": bool(next(iter(owners.values())).config.shard_tables),
        "configured_optimizer": table_optimizer(next(iter(owners.values())).config),
        "tables": [(t.name, t.modulus, t.width) for t in tables],
        "rows_per_rank": sum(rows.values()),
        "rows_total": sum(t.modulus for t in tables),
        "table_bytes_per_rank": FLOAT * sum(n * width[k] for k, n in rows.items()),
        "table_bytes_total": FLOAT * sum(t.modulus * t.width for t in tables),
        "optimizer_bytes_per_rank": {
            o: FLOAT * sum(n * state_floats_per_row(o, width[k]) for k, n in rows.items())
            for o in TABLE_OPTIMIZERS
        },
        "dense_parameters": dense,
        "table_parameters": sum(t.modulus * t.width for t in tables),
        "table_share": sum(t.modulus * t.width for t in tables)
        / (dense + sum(t.modulus * t.width for t in tables)),
        "size_warnings": [line for owner in owners.values()
                          for line in table_size_warnings(owner.tables, owner.vocab_size)],
        # weights, gradients and AdamW's two moments, replicated on every rank
        "dense_bytes_per_rank": FLOAT * 4 * dense,
    }


def print_plan(figures: dict, optimizer: str) -> None:
    def gib(size: float) -> str:
        return f"{size / GIB:,.2f} GiB" if size >= GIB else f"{size / 2**20:,.2f} MiB"

    w = figures["world_size"]
    print(f"{len(figures['tables'])} n-gram tables on {w} ranks (row-wise, ceil(m / {w}) rows "
          f"each, the last rank fewer):")
    for name, rows, width in figures["tables"]:
        print(f"  {name}: {rows:,} rows x {width}")
    print(f"\nper rank (the busiest), fp32{'':14}per rank      all ranks")
    table = [
        ("n-gram rows", f"{figures['rows_per_rank']:,}", f"{figures['rows_total']:,}"),
        ("n-gram table", gib(figures["table_bytes_per_rank"]), gib(figures["table_bytes_total"])),
    ]
    sharded = figures.get("tables_sharded", True)
    for name, size in figures["optimizer_bytes_per_rank"].items():
        mark = "" if name != optimizer else " (configured)" if sharded else " (sharded default)"
        table.append((f"table state: {name}{mark}", gib(size), gib(size * w)))
    table.append((f"dense model ({figures['dense_parameters'] / 1e6:,.1f}M params) x4",
                  gib(figures["dense_bytes_per_rank"]), gib(figures["dense_bytes_per_rank"] * w)))
    total = (figures["table_bytes_per_rank"] + figures["optimizer_bytes_per_rank"][optimizer]
             + figures["dense_bytes_per_rank"])
    table.append((f"total with {optimizer}", gib(total), gib(total * w)))
    for label, per_rank, everything in table:
        print(f"  {label:<42}{per_rank:>14}{everything:>16}")
    print("\nDense x4: weights, gradients and AdamW's two moments; activations not included.")
    if "table_share" in figures:
        share = figures["table_share"]
        print(f"\nn-gram tables: {figures['table_parameters']:,} of "
              f"{figures['table_parameters'] + figures['dense_parameters']:,} parameters "
              f"({100 * share:.1f}%).")
        if share > TABLE_SHARE_LIMIT:
            print(f"warning: the n-gram tables hold more than half of the parameters "
                  f"({100 * share:.1f}%); LongCat-Flash keeps them at most about half of the model")
        for line in figures.get("size_warnings", []):
            print(f"warning: {line}")
    if not sharded:
        print(f"The config keeps its tables plain (shard_tables false; they train with "
              f"{figures['configured_optimizer']} in one process): this plan is of the same tables "
              f"sharded, with the sharded tables' default {optimizer}. Set "
              f"model.over_encoding.shard_tables true (and table_optimizer) to plan your choice.")


def _fused_optimizer(config) -> str:
    # The plan is of sharded tables: a config that keeps them plain is planned with the default.
    return table_optimizer(config) if config.shard_tables else "rowwise_adagrad"

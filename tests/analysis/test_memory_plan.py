"""oe plan's checks of table sizes: the n-gram tables' share of the parameters, sizes near a
multiple of the vocabulary."""

from __future__ import annotations

from oe.cli.plan import main as plan_main


def test_plan_flags_a_table_share_above_half_and_sizes_near_a_multiple_of_v(capsys) -> None:
    code = plan_main(["--config", "configs/cfg_oe3.yaml", "--world-size", "64", "--modulus",
                      "5025703", "--n-embd", "2048", "--n-head", "16", "--vocab-size", "50257"])
    assert code == 0
    out = capsys.readouterr().out
    # Two tables of 5,025,703 and 5,025,705 rows x 1024 = 10,292,641,792 parameters.
    assert "n-gram tables: 10,292,641,792 of " in out
    assert "warning: the n-gram tables hold more than half of the parameters" in out
    assert "ngram2_0 (order 2): 5,025,703 rows = 100 x 50,257 + 3" in out
    assert "ngram3_0 (order 3): 5,025,705 rows = 100 x 50,257 + 5" in out


def test_plan_of_small_tables_away_from_multiples_warns_of_nothing(capsys) -> None:
    # cfg3f: V = 6, m = 1,009 and 1,011 (168 x 6 + 1 and + 3: 1% of V is below one row).
    assert plan_main(["--config", "configs/cfg_oe3.yaml", "--world-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "n-gram tables: " in out and "warning" not in out


def test_the_plan_counts_what_the_built_model_holds() -> None:
    """The plan of the model built on the meta device matches the same model built for real: its
    dense parameters, its tables' rows and bytes, and each rank's share of the rows."""
    from oe.analysis.memory_plan import FLOAT, build_on_meta, plan
    from oe.distributed.parallelize import row_split, table_owners
    from oe.models.build import build_arguments, build_model

    section = {"backbone": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 32},
               "over_encoding": {"orders": [2, 3], "k": 2, "modulus": 1009}}
    figures = plan(build_on_meta(section, vocab_size=11), world_size=3)
    real = build_model(**build_arguments({**section, "vocab_size": 11}))
    table_params = [p for owner in table_owners(real.gpt).values() for p in owner.ngram.parameters()]
    tables = {id(p) for p in table_params}
    assert figures["dense_parameters"] == sum(p.numel() for p in real.gpt.parameters()
                                              if id(p) not in tables)
    assert figures["table_parameters"] == sum(p.numel() for p in table_params)
    assert figures["table_bytes_total"] == FLOAT * figures["table_parameters"]
    assert figures["rows_total"] == sum(p.shape[0] for p in table_params)
    # rank 0 holds the first, largest share of every table's rows
    assert figures["rows_per_rank"] == sum(row_split(p.shape[0], 3)[0][1] for p in table_params)

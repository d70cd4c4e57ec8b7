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

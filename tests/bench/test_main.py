"""``oe bench``: every benchmark module is listed with its docstring's summary; an unknown name is
refused naming the choices; a name runs that module's main with the rest of the line."""

from __future__ import annotations

from pathlib import Path

import oe.bench
from oe.bench import __main__ as bench
from oe.bench import mine

MODULES = {p.stem for p in Path(oe.bench.__path__[0]).glob("*.py")} - {
    "__init__", "__main__", "common"}


def test_every_module_is_listed_with_its_summary(capsys):
    assert set(bench.available()) == MODULES and len(MODULES) >= 10
    assert bench.main([]) == 2 and bench.main(["--help"]) == 0
    listed = capsys.readouterr().out
    shard = next(line for line in listed.splitlines() if line.startswith("  shard "))
    assert shard.endswith("one step of a row-wise sharded n-gram table, 1 rank against 2.")
    for name in MODULES:
        assert f"  {name} " in listed


def test_an_unknown_benchmark_is_refused_and_a_known_one_gets_the_rest(capsys, monkeypatch):
    assert bench.main(["nope", "--out", "x"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: unknown benchmark 'nope'; choose one of ") and "shard" in error
    monkeypatch.setattr(mine, "main", lambda argv: len(argv))
    assert bench.main(["mine", "--tokens", "5"]) == 2

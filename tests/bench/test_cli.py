"""oe bench cli: each command's median wall time beside a bare interpreter's, and a --help that
takes longer than the limit fails the benchmark."""

from __future__ import annotations

import json

import oe.cli
from oe.bench.cli import main


def test_cli_benchmark_times_each_help_and_flags_the_slow_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(oe.cli, "SUBCOMMANDS", {"cfg": oe.cli.SUBCOMMANDS["cfg"]})
    out = tmp_path / "cli.json"
    assert main(["--rounds", "1", "--limit", "0", "--out", str(out)]) == 1  # every --help is over 0 s
    rows = {row["command"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"python -c pass", "python -c 'import torch'", "oe cfg --help"}
    assert rows["oe cfg --help"]["over_limit"] and not rows["python -c pass"]["over_limit"]
    assert rows["python -c pass"]["x_bare_python"] == 1.0
    assert rows["python -c 'import torch'"]["median_s"] > rows["python -c pass"]["median_s"]
    assert main(["--rounds", "1", "--limit", "600", "--out", str(out)]) == 0

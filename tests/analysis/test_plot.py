"""oe.analysis.plot: curves from run folders, grouped over seeds, and the summary table."""

from __future__ import annotations

from pathlib import Path

import pytest

from oe.analysis.plot import run_history
from oe.cli.plot import main


def _write(path: Path, rows: list[tuple[int, float, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("epoch,step,val/loss,val/gen_acc\n"
                    + "".join(f"0,{s},{v},{g}\n" for s, v, g in rows))


def test_groups_seeds_and_prints_values_at_a_step(tmp_path, capsys):
    _write(tmp_path / "cfg_oe3-seed0/csv/version_0/metrics.csv", [(9, 1.0, ""), (19, 0.8, "0.5")])
    _write(tmp_path / "cfg_oe3-seed1/csv/version_0/metrics.csv", [(9, 1.2, ""), (19, 0.6, "0.3")])
    _write(tmp_path / "cfg_baseline-seed0/metrics.csv", [(19, 0.9, "0.1")])
    out = tmp_path / "fig.png"
    runs = [str(tmp_path / n) for n in ("cfg_oe3-seed0", "cfg_oe3-seed1", "cfg_baseline-seed0")]
    assert main([*runs, "--out", str(out), "--summary-step", "19"]) == 0
    assert out.stat().st_size > 1000
    table = capsys.readouterr().out
    assert "| cfg_oe3 | 0.7000 (0.6000..0.8000, n=2) | 0.4000 (0.3000..0.5000, n=2) |" in table
    assert "| cfg_baseline | 0.9000 (0.9000..0.9000, n=1)" in table


def test_a_resumed_run_keeps_the_newer_rows(tmp_path):
    _write(tmp_path / "run/csv/version_0/metrics.csv", [(9, 1.0, ""), (19, 0.9, ""), (29, 0.8, "")])
    _write(tmp_path / "run/csv/version_1/metrics.csv", [(19, 0.7, ""), (29, 0.6, "")])
    assert run_history(tmp_path / "run")["val/loss"] == [(9, 1.0), (19, 0.7), (29, 0.6)]


def test_missing_metrics_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics.csv"):
        run_history(tmp_path)
    _write(tmp_path / "run/metrics.csv", [(9, 1.0, "")])
    assert main([str(tmp_path / "run"), "--metrics", "train/loss", "--out",
                 str(tmp_path / "x.png")]) == 2

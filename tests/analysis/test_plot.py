"""oe.analysis.plot: curves from run folders, grouped over seeds, and the summary table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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


def _panel(by_series):
    import matplotlib.pyplot as plt

    from oe.analysis.plot import draw_panel

    fig, ax = plt.subplots()
    draw_panel(ax, by_series)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    notes = [t.get_text() for t in ax.texts]
    plt.close(fig)
    return ax, labels, notes


def test_tick_labels_are_the_values_themselves():
    steps = np.arange(100, 1100, 100)
    flat = 1.0812 + 0.0002 * (np.arange(10) % 2)  # a loss that only wiggles
    ax, labels, _ = _panel({"run": [(steps, flat)]})
    assert ax.yaxis.get_offset_text().get_text() == ""  # no "+1.081" above the axis
    values = [float(label.replace("\u2212", "-")) for label in labels]
    assert all(1.07 < v < 1.09 for v in values), labels  # each label reads as a loss
    low, high = ax.get_ylim()
    assert high - low >= 0.005 * 1.0814  # the wiggle is not blown up to fill the panel
    ax, _, _ = _panel({"run": [(np.array([2e6, 4e6, 6e6]), np.array([3.0, 2.0, 1.5]))]})
    assert {t.get_text() for t in ax.get_xticklabels()} & {"2M", "4M", "6M"}


def test_a_metric_that_is_0_gets_0_to_1():
    ax, labels, _ = _panel({"run": [(np.arange(5), np.zeros(5))]})
    low, high = ax.get_ylim()
    assert low < 0 < 0.9 < high < 1.1 and "1.0" in labels


def test_the_first_point_is_on_the_scale_and_spikes_are_counted_once():
    steps = np.arange(0, 40)
    loss = np.full(40, 2.0) + 0.01 * np.sin(steps)
    loss[0] = 9.0   # the first logged loss: the main drop of a short run
    loss[20] = 50.0  # a spike
    ax, _, notes = _panel({"run": [(steps, loss)]})
    low, high = ax.get_ylim()
    assert low < 1.99 and 9.0 < high < 50.0
    assert notes == ["1 point off the scale"]  # one run: one point, not mean, low and high
    other = loss.copy()
    other[20] = 2.0
    _, _, notes = _panel({"seeds": [(steps, loss), (steps, other)]})
    assert notes == ["1 point off the scale"]  # one step of one series


def test_compact_number_reads_as_the_value():
    from oe.analysis.plot import compact_number

    assert [compact_number(v) for v in (613_594, 12_000, 2_500_000, 1.2e9, 5_000, 0.5)] == \
        ["613.594k", "12k", "2.5M", "1.2G", "5000", "0.5"]

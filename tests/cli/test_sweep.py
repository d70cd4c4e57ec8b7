"""oe.cli.sweep: grid expansion, the points file the array template reads, and bad input."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from oe.cli.sweep import SweepError, check_point, load_sweep, main, point_name, write_points_file

ROOT = Path(__file__).resolve().parents[2]


def write_sweep(tmp_path: Path, **fields) -> Path:
    spec = {"name": "s1", "base_configs": ["configs/cfg_oe3.yaml", "configs/presets/quick_cfg.yaml"],
            "grid": {"model.over_encoding.modulus": [7, 37], "seed_everything": [0, 1]},
            "overrides": {"trainer.max_steps": 20}}
    spec.update(fields)
    spec = {k: v for k, v in spec.items() if v is not None}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(autouse=True)
def in_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # base_configs are relative to the repository root


def test_grid_expands_to_every_combination_with_overrides_first(tmp_path):
    points = load_sweep(write_sweep(tmp_path)).points()
    assert [p.name for p in points] == ["m=7_seed=0", "m=7_seed=1", "m=37_seed=0", "m=37_seed=1"]
    args = points[3].fit_args
    assert args[:4] == ["--config", "configs/cfg_oe3.yaml", "--config", "configs/presets/quick_cfg.yaml"]
    # overrides, then the point's own values: later arguments win in oe.cli.fit
    assert args[4:] == ["--trainer.max_steps", "20", "--model.over_encoding.modulus", "37",
                        "--seed_everything", "1"]


def test_list_values_become_one_yaml_word_and_name():
    assert point_name({"model.over_encoding.orders": [2, 3], "model.over_encoding.k": 2}) == \
        "orders=2+3_k=2"


def test_points_file_lines_round_trip_through_the_shell(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, grid={"model.over_encoding.orders": [[2], [2, 3]]}))
    points = sweep.points()
    path = write_points_file(sweep, points, tmp_path / "runs")
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    words = shlex.split(lines[1])  # what `eval "set -- $line"` gives the array task
    assert words[0] == str(tmp_path / "runs" / "s1" / "orders=2+3")
    assert words[words.index("--model.over_encoding.orders") + 1] == "[2, 3]"
    assert words[-4:] == ["--run_name", "orders=2+3", "--run_group", "s1"]


@pytest.mark.parametrize("fields, message", [
    ({"grdi": {"seed_everything": [0]}}, "unknown key(s) ['grdi']"),
    ({"grid": {}}, "'grid' is empty"),
    ({"grid": {"seed_everything": []}}, "non-empty list"),
    ({"grid": {"seed_everything": 3}}, "non-empty list"),
    ({"base_configs": ["configs/nope.yaml"]}, "configs/nope.yaml does not exist"),
    ({"name": "a/b"}, "'name' must be a folder-safe string"),
    ({"overrides": {"seed_everything": 1}}, "in both 'grid' and 'overrides'"),
])
def test_bad_sweep_files_name_the_problem(tmp_path, fields, message):
    with pytest.raises(SweepError, match=None) as err:
        load_sweep(write_sweep(tmp_path, **fields)).points()
    assert message in str(err.value)
    assert str(tmp_path / "sweep.yaml") in str(err.value)


def test_values_that_name_points_alike_are_refused(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, grid={"trainer.logger_tag": ["a b", "a/b"]}))
    with pytest.raises(SweepError, match="same run name"):
        sweep.points()


def test_submit_without_sbatch_fails_before_writing_anything(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    runs = tmp_path / "runs"
    code = main(["--sweep", str(write_sweep(tmp_path)), "--submit", "--runs-dir", str(runs)])
    assert code == 2
    assert "needs SLURM's `sbatch`" in capsys.readouterr().err
    assert not runs.exists()


def test_unknown_key_in_the_fit_config_is_caught_before_submission(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, overrides={"model.backbone.n_layre": 2}))
    with pytest.raises(SweepError, match="n_layre"):
        check_point(sweep.points()[0])
    check_point(load_sweep(write_sweep(tmp_path)).points()[0])  # the good one parses


@pytest.mark.parametrize("grid,message", [
    ({"model.over_encoding.modulus": [37, 0]}, "modulus must be >= 1, got 0"),
    ({"model.over_encoding.orders": [[2, 3], [9]]}, r"orders holds \[9\]: n-gram orders run from 2 to 8"),
    ({"model.over_encoding.k": [1, 0]}, "k must be >= 1, got 0"),
])
def test_grid_values_are_checked_as_the_model_would_be(tmp_path, grid, message):
    points = load_sweep(write_sweep(tmp_path, grid=grid)).points()
    check_point(points[0])
    with pytest.raises(SweepError, match=f"point {points[1].name}: .*{message}"):
        check_point(points[1])


def test_print_mode_lists_one_sbatch_command_per_point(tmp_path, capsys):
    code = main(["--sweep", str(write_sweep(tmp_path)), "--no-check", "--runs-dir", "runs",
                 "--sbatch-arg=--partition=gpu"])
    assert code == 0
    commands = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("sbatch")]
    assert len(commands) == 4
    words = shlex.split(commands[2])
    assert words[:4] == ["sbatch", "--partition=gpu", "slurm/fit_1node.sbatch", "runs/s1/m=37_seed=0"]
    assert words[-2:] == ["--run_group", "s1"]

"""Every config under configs/ loads through oe.cli.config, alone or with the base it is meant for.

Families share callbacks, data and trainer settings and differ in the model kind (and the run's
folder); overlays change fields without dropping callbacks or the checkpoint folder; bad input is
one error naming the file or the field.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from oe.cli import fit_command
from oe.cli.config import ConfigError, config_layers, fit_parser, parse_fit_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
TOP_LEVEL = sorted(p.name for p in CONFIGS.glob("*.yaml"))
# Overlays (no run of their own) and a config each is layered over.
OVERLAYS = {
    "presets/quick_cfg.yaml": ["cfg_baseline.yaml", "cfg_oe3.yaml"],
    "presets/tiny_cfg.yaml": ["cfg_oe3.yaml", "presets/quick_cfg.yaml"],
    "presets/evidence_gpu.yaml": ["cfg_ot3.yaml"],
    "presets/laptop_cfg.yaml": ["cfg_oe3.yaml"],
    "presets/wikitext_quick.yaml": ["wikitext_oe3.yaml"],
    **{f"ablations/{p.name}": ["cfg_oe3.yaml"] for p in (CONFIGS / "ablations").glob("*.yaml")},
}
FAMILIES = {
    "cfg3f": ["cfg_baseline", "cfg_oe2", "cfg_oe3", "cfg_od3", "cfg_ot3"],
    "cfg3f 85M": ["cfg_od3_85m", "cfg_ot3_85m"],
    "wikitext": ["wikitext_baseline", "wikitext_oe2", "wikitext_oe3", "wikitext_ot"],
    "wikitext, frozen GPT-2": ["wikitext_gpt2_oe", "wikitext_gpt2_frequent"],
}
# What a model kind sets: its model fields, and the strategy that shards n-gram tables.
KIND_FIELDS = ("model.over_encoding", "model.heads", "model.frequent_ngrams", "trainer.strategy")
CALLBACKS = ("checkpoint", "ngram_stats", "generation", "downstream")


@pytest.fixture(scope="module")
def parser():
    return fit_parser()


@pytest.fixture(autouse=True)
def in_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def load(parser, *configs: str, extra: tuple[str, ...] = ()):
    args = [word for c in configs for word in ("--config", f"configs/{c}")]
    return parse_fit_config([*args, *extra], parser)


def without_run_and_kind(config) -> dict:
    """A parsed config as a mapping, less the model kind and everything placed by run_dir."""
    flat = config.clone()
    for key in (*KIND_FIELDS, "run_dir", "trainer.default_root_dir", "checkpoint.init_args.dirpath",
                "config"):
        if key in flat:
            del flat[key]
    for logger in flat.trainer.logger:
        logger.init_args.save_dir = None
        if "name" in logger.init_args and logger.class_path.endswith("WandbLogger"):
            logger.init_args.name = None  # the run folder's name
    return flat.as_dict()


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_every_top_level_config_runs_alone_in_its_own_folder(parser, name):
    config = load(parser, name)
    run_dir = f"runs/{Path(name).stem}"
    assert config.run_dir == run_dir
    assert config.trainer.default_root_dir == run_dir
    assert config.checkpoint.init_args.dirpath == f"{run_dir}/checkpoints"
    assert {lg.init_args.save_dir for lg in config.trainer.logger} == {run_dir}
    printed = yaml.safe_load(parser.dump(config))  # what --print_config writes
    assert "base" not in printed and printed["run_dir"] == run_dir


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_every_overlay_loads_over_its_base(parser, overlay):
    *bases, _ = OVERLAYS[overlay] + [None]
    config = load(parser, *bases, overlay)
    assert config.checkpoint.init_args.dirpath == f"{config.run_dir}/checkpoints"


def test_every_file_under_configs_is_used():
    reached = {path.resolve() for name in TOP_LEVEL for path, _ in config_layers(CONFIGS / name)}
    reached |= {(CONFIGS / overlay).resolve() for overlay in OVERLAYS}
    parts = {p.resolve() for p in CONFIGS.rglob("*.yaml") if p.parent.name != "sweeps"}
    assert sorted(str(p.relative_to(CONFIGS)) for p in parts - reached) == []


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_kinds_of_a_family_differ_only_in_the_model_kind(parser, family):
    configs = {name: load(parser, f"{name}.yaml") for name in FAMILIES[family]}
    shared = {name: without_run_and_kind(c) for name, c in configs.items()}
    first, *others = FAMILIES[family]
    for name in others:
        assert shared[name] == shared[first], f"{name} and {first} differ beyond the model kind"
    kinds = {name: tuple(str(c.get(k)) for k in KIND_FIELDS) for name, c in configs.items()}
    assert len(set(kinds.values())) == len(kinds), "two configs of a family have the same kind"


def test_each_data_family_has_its_own_callbacks(parser):
    cfg3f, wikitext = load(parser, "cfg_ot3.yaml"), load(parser, "wikitext_gpt2_oe.yaml")
    assert [k for k in CALLBACKS if cfg3f[k] is not None] == ["checkpoint", "ngram_stats",
                                                               "generation"]
    assert [k for k in CALLBACKS if wikitext[k] is not None] == ["checkpoint", "downstream"]


def test_the_quick_overlay_keeps_every_callback_and_the_checkpoint_folder(parser):
    config = load(parser, "cfg_baseline.yaml", "presets/quick_cfg.yaml",
                  extra=("--generation.num_samples", "4"))
    assert config.checkpoint.init_args.dirpath == "runs/cfg_baseline/checkpoints"
    assert config.checkpoint.init_args.every_n_train_steps == 100
    assert config.checkpoint.init_args.save_last is True  # from the base: kept
    assert config.ngram_stats.init_args.every_n_steps == 10
    generation = config.generation.init_args
    assert (generation.num_samples, generation.batch_size, generation.every_n_validations) == \
        (4, 128, 1)


def test_run_dir_on_the_command_line_moves_every_output(parser):
    config = load(parser, "wikitext_gpt2_oe.yaml", extra=("--run_dir", "runs/sw/m=7"))
    assert config.trainer.default_root_dir == "runs/sw/m=7"
    assert config.checkpoint.init_args.dirpath == str(Path("runs/sw/m=7") / "checkpoints")
    wandb = config.trainer.logger[1].init_args
    assert (wandb.name, wandb.group, wandb.project) == ("m=7", "gpt2-frozen-ngrams", "oe-wikitext")


def test_print_config_shows_the_composed_config_and_reads_back(tmp_path):
    result = subprocess.run(fit_command("--config", "configs/cfg_ot3.yaml",
                                        "--config", "configs/presets/quick_cfg.yaml", "--print_config"),
                            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    printed = yaml.safe_load(result.stdout)
    assert printed["checkpoint"]["init_args"]["dirpath"] == "runs/cfg_ot3/checkpoints"
    assert printed["model"]["heads"]["mtp"] is True and printed["model"]["over_encoding"]
    assert printed["generation"]["init_args"]["num_samples"] == 128
    saved = tmp_path / "config.yaml"
    saved.write_text(result.stdout)  # as a run's config.yaml is used again
    again = parse_fit_config(["--config", str(saved)])
    assert again.as_dict() | {"config": None} == \
        parse_fit_config(["--config", "configs/cfg_ot3.yaml", "--config",
                          "configs/presets/quick_cfg.yaml"]).as_dict() | {"config": None}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_missing_file_is_named(parser):
    with pytest.raises(ConfigError, match="--config configs/no_such.yaml: no such file"):
        load(parser, "no_such.yaml")


def test_an_empty_file_is_named(parser, tmp_path):
    empty = write(tmp_path, "empty.yaml", "# nothing here\n")
    with pytest.raises(ConfigError, match=f"--config {empty}: the file is empty"):
        parse_fit_config(["--config", str(empty)], parser)


def test_an_unknown_field_is_named_with_its_file(parser, tmp_path):
    bad = write(tmp_path, "bad.yaml", "trainer:\n  max_stepz: 3\n")
    with pytest.raises(ConfigError, match="max_stepz") as err:
        parse_fit_config(["--config", "configs/cfg_oe3.yaml", "--config", str(bad)], parser)
    assert str(bad) in str(err.value)


def test_a_missing_base_is_named(parser, tmp_path):
    top = write(tmp_path, "top.yaml", "base: [parts/none.yaml]\n")
    with pytest.raises(ConfigError, match=f"base {tmp_path / 'parts/none.yaml'} does not exist"):
        parse_fit_config(["--config", str(top)], parser)


def test_bases_that_include_themselves_are_refused(parser, tmp_path):
    write(tmp_path, "a.yaml", "base: [b.yaml]\n")
    write(tmp_path, "b.yaml", "base: [a.yaml]\n")
    with pytest.raises(ConfigError, match="its bases include itself"):
        parse_fit_config(["--config", str(tmp_path / "a.yaml")], parser)


def test_base_must_be_a_list(parser, tmp_path):
    top = write(tmp_path, "top.yaml", f"base: {CONFIGS / 'cfg_oe3.yaml'}\n")
    with pytest.raises(ConfigError, match="'base' must be a list of config files"):
        parse_fit_config(["--config", str(top)], parser)


def test_an_unknown_field_in_a_base_names_the_base(parser, tmp_path):
    write(tmp_path, "part.yaml", "model:\n  backbone:\n    n_layers: 3\n")
    top = write(tmp_path, "top.yaml", f"base: [{CONFIGS / 'cfg_oe3.yaml'}, part.yaml]\n")
    with pytest.raises(ConfigError, match="n_layers") as err:
        parse_fit_config(["--config", str(top)], parser)
    assert str(tmp_path / "part.yaml") in str(err.value)


def test_a_value_of_the_wrong_type_is_named_by_its_field(parser, tmp_path):
    bad = write(tmp_path, "bad.yaml", "trainer:\n  max_steps: many\n")
    with pytest.raises(ConfigError, match="trainer.max_steps"):
        parse_fit_config(["--config", "configs/cfg_oe3.yaml", "--config", str(bad)], parser)


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_every_over_encoding_config_names_its_combine(parser, name):
    """How the n-gram embeddings join the token's (the paper's mean, or a sum) changes the result
    on real text by more than the seed spread: no shipped config leaves it to the code's default."""
    if load(parser, name).model.over_encoding is None:
        pytest.skip(f"{name} has no Over-Encoding")
    named = [path for path, content in config_layers(CONFIGS / name)
             if "combine" in ((content.get("model") or {}).get("over_encoding") or {})]
    assert named, f"{name}: no layer sets model.over_encoding.combine"


def test_oe_fit_names_a_bad_config_in_one_line_without_the_usage(tmp_path, capsys):
    from oe.cli.fit import main as fit_main

    bad_yaml = write(tmp_path, "bad.yaml", "trainer:\n  max_steps: [3\n")
    misspelt = write(tmp_path, "misspelt.yaml", "trainer:\n  max_stepz: 3\n")
    cases = {
        ("--trainer.max_stepz", "3"): "error: unrecognized arguments: --trainer.max_stepz 3",
        ("--trainer.max_steps", "many"): 'error: Parser key "trainer.max_steps": Expected a '
                                         "<class 'int'>. Got value: many",
        ("--config", str(misspelt)): f"error: --config {misspelt}: Group 'trainer' does not "
                                     f"accept option 'max_stepz'",
        ("--config", str(bad_yaml)): f"error: --config {bad_yaml}: not valid YAML",
        ("--config", str(tmp_path / "none.yaml")): f"error: --config {tmp_path / 'none.yaml'}: "
                                                   f"no such file",
        ("--data.init_args.batch_size", "0"): "error: data.batch_size must be >= 1, got 0",
        ("--data.init_args.batch_size", "many"): 'error: Parser key "data": Problem with given '
                                                 "class_path 'datamodules.cfg.CFGDataModule': "
                                                 'Parser key "batch_size": Expected a <class '
                                                 "'int'>. Got value: many",
    }
    for extra, start in cases.items():
        args = ["--config", "configs/cfg_oe3.yaml", *extra, "--run_dir", str(tmp_path / "run")]
        try:
            code = fit_main(args)
        except SystemExit as stop:
            code = stop.code
        err = capsys.readouterr().err.strip().splitlines()
        lines = [line for line in err if not line.startswith("Seed set")]
        assert code == 2 and len(lines) == 1 and lines[0].startswith(start), (extra, err)

"""oe.cli.console: known harmless warnings hidden by default, shown with --verbose."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from oe.cli import SUBCOMMANDS, console, main

ROOT = Path(__file__).resolve().parents[2]
SRUN_HINT = "The `srun` command is available on your system but is not used. HINT: ..."


def _shown(message: str) -> bool:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # what a plain interpreter does, before ours apply
        console.quiet_known_warnings()
        warnings.warn(message, UserWarning)
    return bool(caught)


def test_known_warnings_are_hidden_and_others_are_not(monkeypatch):
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    assert not _shown(SRUN_HINT)
    assert not _shown("It is recommended to use `self.log('val/gen_acc', ..., sync_dist=True)` ...")
    assert _shown("It is recommended to use `self.log('val/loss', ..., sync_dist=True)` ...")
    assert _shown("something nobody has looked at")


def test_verbose_flag_shows_everything_and_reaches_child_processes(monkeypatch):
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    assert console.take_verbose_flag(["--out", "x", "--verbose"]) == ["--out", "x"]
    assert os.environ[console.VERBOSE_ENV] == "1"  # inherited by the runs a tool starts
    assert _shown(SRUN_HINT)
    monkeypatch.delenv(console.VERBOSE_ENV)
    console.quiet_known_warnings()


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_tool_takes_verbose(name, monkeypatch, capsys):
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    monkeypatch.setattr(sys, "argv", ["oe"])
    try:
        code = main([name, "--verbose", "--help"])
    except SystemExit as stop:
        code = stop.code
    assert code == 0, capsys.readouterr().err
    assert os.environ[console.VERBOSE_ENV] == "1"
    assert "--verbose" not in sys.argv  # nor does the tool's own parser see it
    assert "usage" in capsys.readouterr().out.lower()


def test_every_python_m_module_runs_its_tool():
    """``python -m oe.X`` is ``oe X``: each oe/X.py hands its command line to ``run_module``."""
    shims = {path.stem: path.read_text() for path in (ROOT / "oe").glob("*.py")
             if "run_module(" in path.read_text()}
    assert {name.replace("_", "-") for name in shims} <= set(SUBCOMMANDS)
    for name, text in shims.items():
        assert f'run_module("{name.replace("_", "-")}")' in text, name
    result = subprocess.run([sys.executable, "-m", "oe.plot", "--verbose", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "--summary_step" in result.stdout


def test_the_resume_and_single_process_load_notices_are_hidden(monkeypatch):
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    for message in [
        "You're resuming from a checkpoint that ended before the epoch ended and your dataloader "
        "is not resumable. This can cause unreliable results if further training is done.",
        "Please use DTensor instead and we are deprecating ShardedTensor.",
        "torch.distributed is disabled, unavailable or uninitialized, assuming the intent is to "
        "load in a single process.",
    ]:
        assert not _shown(message), message


def test_lightnings_note_on_each_full_save_is_hidden(monkeypatch, caplog):
    import logging

    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    console.quiet_known_warnings()
    name = "lightning.pytorch.trainer.connectors.checkpoint_connector"
    with caplog.at_level(logging.INFO, logger=name):
        logging.getLogger(name).info("`weights_only` was not set, defaulting to `False`.")
        logging.getLogger(name).info("Restoring states from the checkpoint path at x.ckpt")
    assert [r.getMessage() for r in caplog.records] == [
        "Restoring states from the checkpoint path at x.ckpt"]


def test_the_banner_of_a_one_process_group_is_hidden_and_a_larger_groups_is_kept(monkeypatch,
                                                                                   caplog):
    """A run with sharded tables on one device starts a one-rank gloo group (the DDP-based
    strategy); Lightning's banner for it says nothing. A larger group's banner stays."""
    import logging

    import torch.distributed as dist
    from lightning.fabric.plugins.environments import LightningEnvironment
    from lightning.fabric.utilities.distributed import _init_dist_connection

    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    console.quiet_known_warnings()
    loggers = ["lightning.fabric.utilities.distributed", "lightning.fabric.utilities.rank_zero",
               "lightning.pytorch.utilities.rank_zero"]
    with caplog.at_level(logging.INFO):
        for name in loggers:
            caplog.set_level(logging.INFO, logger=name)
        assert not dist.is_initialized()
        try:
            _init_dist_connection(LightningEnvironment(), "gloo", global_rank=0, world_size=1)
        finally:
            dist.destroy_process_group()
        shown_for_one = caplog.text
        caplog.clear()
        logging.getLogger(loggers[0]).info(
            "Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/16")
        logging.getLogger(loggers[1]).info(
            f"{'-' * 100}\ndistributed_backend=gloo\n"
            f"All distributed processes registered. Starting with 16 processes\n{'-' * 100}\n")
    assert "Initializing distributed" not in shown_for_one
    assert "distributed_backend" not in shown_for_one
    assert "MEMBER: 1/16" in caplog.text and "Starting with 16 processes" in caplog.text

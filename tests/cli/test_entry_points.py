"""oe.cli's entries: ``oe NAME``, ``python -m oe NAME`` and ``python -m oe.NAME`` hand the tool
the same arguments (``--verbose`` taken off), leave the process's command line so that the ranks
Lightning starts run the same command, and importing the package changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import oe.cli
from oe.cli import console

ROOT = Path(__file__).resolve().parents[2]
SEEN: list[tuple[list[str], list[str]]] = []  # (the tool's arguments, sys.argv) per call


def main(args: list[str]) -> int:
    """A stand-in tool: records what an entry hands it."""
    SEEN.append((list(args), list(sys.argv)))
    return 0


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setitem(oe.cli.SUBCOMMANDS, "fit", (__name__, "stand-in"))
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    SEEN.clear()
    return SEEN


def _relaunch(module: str | None) -> list[str]:
    """The command Lightning starts each further rank with, for this process's sys.argv, when the
    program is a script (``module`` None: the ``oe`` command) or ``python -m module``."""
    from lightning.fabric.strategies.launchers import subprocess_script

    main_module = sys.modules["__main__"]
    spec = main_module.__spec__
    main_module.__spec__ = None if module is None else type("Spec", (), {"name": module})()
    try:
        return subprocess_script._basic_subprocess_cmd()[1:]
    finally:
        main_module.__spec__ = spec


FLAGS = ["--config", "configs/cfg_baseline.yaml", "--trainer.devices", "2", "--verbose",
         "--print_config"]
WITHOUT_VERBOSE = [flag for flag in FLAGS if flag != "--verbose"]


def test_the_oe_command(stand_in, monkeypatch):
    oe_script = str(Path(sys.executable).parent / "oe")
    monkeypatch.setattr(sys, "argv", [oe_script, "fit", *FLAGS])
    assert oe.cli.main() == 0
    assert stand_in == [(WITHOUT_VERBOSE, [oe_script, "fit", *WITHOUT_VERBOSE])]
    assert os.environ[console.VERBOSE_ENV] == "1"  # the ranks it starts are verbose too
    assert _relaunch(None) == [oe_script, "fit", *WITHOUT_VERBOSE]


@pytest.mark.parametrize("module, program, words", [
    ("oe.fit", ROOT / "oe" / "fit.py", []),            # python -m oe.fit ...
    ("oe.__main__", ROOT / "oe" / "__main__.py", ["fit"]),  # python -m oe fit ...
])
def test_python_m(stand_in, monkeypatch, module, program, words):
    monkeypatch.setattr(sys, "argv", [str(program), *words, *FLAGS])
    assert (oe.cli.run_module("fit") if not words else oe.cli.main()) == 0
    assert stand_in == [(WITHOUT_VERBOSE, [str(program), *words, *WITHOUT_VERBOSE])]
    assert _relaunch(module) == ["-m", module, *words, *WITHOUT_VERBOSE]


def test_importing_the_command_layer_changes_nothing():
    check = ("import os, sys, warnings\n"
             "sys.argv = ['oe', 'fit', '--verbose']\n"
             "filters = list(warnings.filters)\n"
             "import oe.cli, oe.fit, oe.plot, oe.__main__\n"
             "assert sys.argv == ['oe', 'fit', '--verbose'], sys.argv\n"
             "assert warnings.filters == filters\n"
             "assert 'OE_VERBOSE' not in os.environ and 'WANDB_SILENT' not in os.environ\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OE_VERBOSE", "WANDB_SILENT")}
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


def test_fit_reads_devices_and_print_config_through_the_oe_command(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["oe"])
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    with pytest.raises(SystemExit) as stop:
        oe.cli.main(["fit", *FLAGS])
    assert stop.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert str(printed["trainer"]["devices"]) == "2"
    assert sys.argv == ["oe", "fit", *WITHOUT_VERBOSE]


"""Every ``oe X --help`` answers without importing torch or Lightning (``oe bench cli`` times
them): each tool parses its command line before it imports its stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from oe.cli import SUBCOMMANDS

ROOT = Path(__file__).resolve().parents[2]
CHECK = ("import sys; from oe.cli import main\n"
         "name = sys.argv[1]; sys.argv = ['oe']  # as the oe command starts\n"
         "try:\n    code = main([name, '--help'])\n"
         "except SystemExit as stop:\n    code = stop.code\n"
         "heavy = sorted({'torch', 'lightning', 'matplotlib'} & set(sys.modules))\n"
         "assert not heavy, heavy\n"
         "sys.exit(code)")


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_help_imports_no_heavy_stack(name):
    result = subprocess.run([sys.executable, "-c", CHECK, name], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"oe {name}" in result.stdout.splitlines()[0]  # the usage names the oe command

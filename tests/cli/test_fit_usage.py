"""oe.cli.fit_usage: the quick ``oe fit --help`` names only flags that ``oe fit`` has, and the
``oe`` command prints it without importing torch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from oe.cli.config import fit_parser
from oe.cli.fit_usage import USAGE, wants_usage

ROOT = Path(__file__).resolve().parents[2]


def test_every_flag_of_the_quick_help_is_one_of_oe_fits():
    options = set(fit_parser()._option_string_actions)
    named = set(re.findall(r"(?<![\w.-])(--[a-z_]+)", USAGE)) - {"--verbose"}  # oe's, not the parser's
    assert {"--config", "--run_dir", "--resume", "--checkpoint", "--generation"} <= named
    assert named <= options, sorted(named - options)


def test_a_bare_help_is_answered_without_the_stack():
    assert wants_usage(["--help"]) and wants_usage(["-h", "--verbose"])
    assert not wants_usage(["--config", "configs/cfg_oe3.yaml", "--help"])
    code = ("import sys; from oe.cli import main; code = main(['fit', '--help']); "
            "assert 'torch' not in sys.modules and 'lightning' not in sys.modules; sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: oe fit --config CONFIG")

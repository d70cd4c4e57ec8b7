"""oe.cli.allocator: which allocator a process entry preloads, its refusals, and the re-execution."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from oe.cli.allocator import ENV, find_tcmalloc, library_to_preload

ROOT = Path(__file__).resolve().parents[2]


def _found() -> str:
    return "libtcmalloc_minimal.so.4"


def _missing() -> None:
    return None


@pytest.mark.parametrize("environ, find, expected", [
    ({}, _found, "libtcmalloc_minimal.so.4"),                        # auto, found
    ({ENV: "auto"}, _missing, None),                                 # auto, not found: as it is
    ({ENV: "tcmalloc"}, _found, "libtcmalloc_minimal.so.4"),
    ({ENV: "system"}, _found, None),
    ({"LD_PRELOAD": "/opt/lib/libjemalloc.so.2"}, _found, None),     # the user's own choice
    ({"LD_PRELOAD": "libtcmalloc.so.4"}, _found, None),              # already re-executed
])
def test_the_library_to_preload(environ, find, expected):
    assert library_to_preload(environ, "linux", find) == expected


def test_other_systems_run_as_they_are():
    assert library_to_preload({}, "darwin", _found) is None


@pytest.mark.parametrize("environ, platform, words", [
    ({ENV: "fast"}, "linux", ["OE_ALLOCATOR='fast'", "auto, tcmalloc, system"]),
    ({ENV: "tcmalloc"}, "linux", ["OE_ALLOCATOR=tcmalloc", "no tcmalloc library",
                                  "libtcmalloc-minimal4"]),
    ({ENV: "tcmalloc"}, "darwin", ["OE_ALLOCATOR=tcmalloc", "only done on Linux"]),
])
def test_refusals_name_the_variable_and_what_was_expected(environ, platform, words):
    with pytest.raises(SystemExit) as stop:
        library_to_preload(environ, platform, _missing)
    assert all(word in str(stop.value) for word in words), stop.value


CHILD = ("import sys; from oe.cli.allocator import use_fast_allocator; use_fast_allocator(); "
         "print('tcmalloc' in open('/proc/self/maps').read(), sys.argv[1:])")


def _child(allocator: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env[ENV] = allocator
    result = subprocess.run([sys.executable, "-c", CHILD, "--flag", "value"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120, check=True)
    return result.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="preloading is done on Linux")
def test_system_keeps_the_process_as_it_is():
    assert _child("system") == "False ['--flag', 'value']"


@pytest.mark.skipif(not sys.platform.startswith("linux") or find_tcmalloc() is None,
                    reason="no tcmalloc library on this machine (libtcmalloc-minimal4)")
def test_the_process_re_executes_itself_with_tcmalloc_and_its_own_arguments():
    assert _child("auto") == "True ['--flag', 'value']"

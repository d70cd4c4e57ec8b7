"""Clean stops: the signal handling of ``CleanStop`` in a process of its own."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

# The process installs CleanStop's handlers and then, inside one C call (``os.system``, which
# runs no Python until it returns), receives SIGTERM ``count`` times, 0.2 s apart: Python's
# handler then runs once for all of them.
SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from types import SimpleNamespace
    from oe.training.stops import CleanStop

    stop = CleanStop()
    stop.on_train_start(SimpleNamespace(strategy=SimpleNamespace(launcher=None)), None)
    kills = "; sleep 0.2; ".join(["kill -TERM {pid}"] * int(sys.argv[1])).format(pid=os.getpid())
    os.system(kills)
    print("received", stop.received, flush=True)
    print("default", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, flush=True)
""")


@pytest.mark.parametrize("count", [1, 2])
def test_two_signals_within_one_call_stop_at_once(count) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(count)], capture_output=True,
                          text=True, timeout=60)
    if count == 1:  # a clean stop is asked for; the run goes on to its next step boundary,
        # and a further signal would take SIGTERM's default action (no Python needs to run)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["received", str(int(signal.SIGTERM)), "default", "True"]
    else:  # asked twice: the process ends at once, by the signal
        assert done.returncode == -signal.SIGTERM and done.stdout == "", done.stderr


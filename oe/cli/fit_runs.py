"""Training runs that a tool starts in processes of their own (``oe evidence`` and its studies):
each through ``python -m oe.fit`` (``oe.cli.fit_command``), its output in a log file."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

from oe.analysis.evidence import EvidenceError
from oe.cli import fit_command

# Metrics to CSV only: a study's runs are read back from their folders, not from W&B.
CSV_ONLY = "[{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {name: csv}}]"


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (1 GPU)"
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run_fit(args: list[str], log: Path, threads: int | None = None) -> float:
    """One oe.fit subprocess, its output into ``log``; its wall seconds. Fails loudly.
    ``threads``: its CPU threads (OMP_NUM_THREADS), when several runs share the cores."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    started = time.time()
    with open(log, "w") as handle:
        code = subprocess.call(fit_command(*args), stdout=handle,
                               stderr=subprocess.STDOUT, env=env)
    if code != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise EvidenceError(f"oe.fit exited with {code} (log: {log}):\n{tail}")
    return time.time() - started

"""Files written whole or not at all.

``write_atomically`` fills a hidden file beside the target (``.NAME.PID.tmp``, a name no reader
picks up) and renames it over the target once complete: a reader sees the old file or the new
one, and a failure or a kill leaves the old one as it was. Every file that a run, a report or a
later run reads back (run markers, results, caches, mined n-grams, checkpoints) is written so.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def temporary_name(path: Path) -> Path:
    """Where ``path`` is written before it is complete."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomically(path: str | Path, write: Callable[[Path], object], durable: bool = False) -> Path:
    """``write(temporary)`` writes the content into a temporary file, which then replaces ``path``
    (its folder is created). ``durable``: synced to the disk before the rename, so that a crash of
    the machine cannot leave an empty file. On any failure the temporary file is removed."""
    path = Path(path)
    writing = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(writing)
        if durable:
            with open(writing, "rb") as stream:
                os.fsync(stream.fileno())
        os.replace(writing, path)
    finally:
        writing.unlink(missing_ok=True)
    return path


def write_text_atomically(path: str | Path, text: str) -> Path:
    return write_atomically(path, lambda temporary: temporary.write_text(text))

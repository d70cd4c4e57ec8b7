"""Output paths checked before any work: a path that cannot be written fails at once, not after."""

from __future__ import annotations

import os
from pathlib import Path


def check_output_dir(path: Path, flag: str) -> None:
    """``path`` is, or can be created as, a writable folder; nothing is created here."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file; give a folder")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{flag} {path} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path} cannot be written: {existing} is not writable")

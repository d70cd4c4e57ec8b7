"""Output paths checked before any work: a path that cannot be written fails at once, not after."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def check_output_dir(path: Path, flag: str) -> None:
    """``path`` is, or can be created as, a writable folder; nothing is created here."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file; give a folder")
    _check_folder(path, flag, path)


def check_output_file(path: Path, flag: str, example: str) -> Path:
    """``path`` is a file this process can create or replace (``example``: a file name to suggest
    when ``path`` is a folder); nothing is created here."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file such as {path / example}")
    _check_folder(path.parent, flag, path)
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {path} cannot be written: the file is read-only")
    return path


def _check_folder(folder: Path, flag: str, given: Path) -> None:
    """``folder`` exists and takes a new file, or its nearest existing parent does."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{flag} {given} cannot be written: {existing} is a file, not a folder")
    try:  # a real write: permission bits alone do not tell (a read-only disk, root)
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ValueError(f"{flag} {given} cannot be written: {existing} is not writable "
                         f"({err.strerror or err})") from None

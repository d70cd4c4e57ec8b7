"""The memory allocator of oe's processes: tcmalloc where the system has it.

A CPU training step allocates and frees large tensors all the time. glibc's malloc hands
PyTorch's 64-byte-aligned requests fresh pages again and again (an aligned request does not fit
the block the previous one freed), so each large tensor pays its page faults anew: about 70,000
per packed bf16 step of the 2.4M cfg3f model (global batch 64, one thread), against about 11,000
under tcmalloc, which reuses freed blocks and took the step 1.6-1.8x faster (``oe bench
allocator``, docs/benchmarks.md).

Every process entry (``oe``, ``python -m oe``, ``python -m oe.NAME``) therefore re-executes
itself once, before it imports torch, with tcmalloc preloaded (``LD_PRELOAD``) when the system
has it (Debian and Ubuntu: ``apt-get install libtcmalloc-minimal4``; conda: ``gperftools``).
The further ranks Lightning starts and the runs ``oe evidence`` and ``oe sweep`` start inherit it.
Results do not depend on the allocator; only speed and resident memory do.

``OE_ALLOCATOR`` chooses: ``auto`` (the default: tcmalloc where found, the system's malloc
otherwise), ``tcmalloc`` (an error where it is not found) or ``system`` (never preload).
A process whose ``LD_PRELOAD`` already names tcmalloc or jemalloc is left as it is.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from collections.abc import Callable, Mapping

ENV = "OE_ALLOCATOR"
CHOICES = ("auto", "tcmalloc", "system")
INSTALL_HINT = "Debian/Ubuntu: apt-get install libtcmalloc-minimal4; conda: conda install gperftools"


def find_tcmalloc() -> str | None:
    """The tcmalloc library the dynamic loader would find (its file name), or None."""
    for name in ("tcmalloc_minimal", "tcmalloc"):
        found = ctypes.util.find_library(name)
        if found:
            return found
    return None


def already_preloaded(environ: Mapping[str, str]) -> bool:
    preload = environ.get("LD_PRELOAD", "")
    return "tcmalloc" in preload or "jemalloc" in preload


def library_to_preload(environ: Mapping[str, str], platform: str = sys.platform,
                       find: Callable[[], str | None] = find_tcmalloc) -> str | None:
    """The library this process should re-execute itself with, or None to run as it is."""
    choice = environ.get(ENV, "auto")
    if choice not in CHOICES:
        raise SystemExit(f"error: {ENV}={choice!r}: expected one of {', '.join(CHOICES)}")
    if choice == "system" or already_preloaded(environ):
        return None
    if not platform.startswith("linux"):
        if choice == "tcmalloc":
            raise SystemExit(f"error: {ENV}=tcmalloc: preloading an allocator is only done on "
                             f"Linux (this is {platform})")
        return None
    library = find()
    if library is None and choice == "tcmalloc":
        raise SystemExit(f"error: {ENV}=tcmalloc: no tcmalloc library was found ({INSTALL_HINT})")
    return library


def use_fast_allocator() -> None:
    """Re-execute this process with tcmalloc preloaded where ``library_to_preload`` says so;
    otherwise return. The command line is the process's own (``sys.orig_argv``)."""
    library = library_to_preload(os.environ)
    if library is None:
        return
    preload = " ".join(filter(None, [library, os.environ.get("LD_PRELOAD", "")]))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]],
              {**os.environ, "LD_PRELOAD": preload})

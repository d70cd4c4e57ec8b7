"""The Hugging Face hub, offline at once when it cannot be reached.

Without a route to the hub, ``datasets`` and ``huggingface_hub`` retry each request for half a
minute or more before they fail. ``offline_unless_reachable`` asks once per process (one
connection, two seconds at most) and, when the hub does not answer or ``HF_HUB_OFFLINE`` is set,
puts both libraries in their offline mode: a copy in the local cache still loads, anything else
fails at once, and the caller's message names the local way instead.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
from urllib.parse import urlparse

_TRUE = ("1", "true", "yes", "on")


def hub_host() -> str:
    """The hub's host name (``HF_ENDPOINT``, default huggingface.co)."""
    return urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or ""


def reachable(host: str, port: int = 443, timeout: float = 2.0) -> bool:
    """Whether a TCP connection to ``host``:``port`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@functools.cache
def offline_unless_reachable() -> bool:
    """Offline mode for ``huggingface_hub`` and ``datasets`` (this process and those it starts)
    when ``HF_HUB_OFFLINE`` is set or the hub cannot be reached; returns whether offline."""
    offline = (os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE
               or not reachable(hub_host()))
    if offline:
        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
        # The libraries read the variables when imported; those already imported are told here.
        for module, name in (("huggingface_hub.constants", "HF_HUB_OFFLINE"),
                             ("datasets.config", "HF_HUB_OFFLINE"),
                             ("datasets.config", "HF_DATASETS_OFFLINE")):
            if module in sys.modules:
                setattr(sys.modules[module], name, True)
    return offline

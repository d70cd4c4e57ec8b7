"""A WandbLogger that goes offline by itself when there is no key or no network."""

from __future__ import annotations

import logging
import netrc
import os
import socket

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)


def _has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        path = os.environ.get("NETRC", os.path.expanduser("~/.netrc"))
        return netrc.netrc(path).authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _reachable(host: str = "api.wandb.ai", port: int = 443, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def choose_mode() -> str:
    """``offline`` unless a key is set and the server answers (WANDB_MODE, if set, wins)."""
    if os.environ.get("WANDB_MODE") in ("offline", "online", "disabled"):
        return os.environ["WANDB_MODE"]
    return "online" if _has_key() and _reachable() else "offline"


class AutoWandbLogger(WandbLogger):
    """WandbLogger, offline when there is no API key or no route to the server.

    Offline runs land in ``<save_dir>/wandb/offline-run-*``; ``wandb sync`` uploads them later.
    """

    def __init__(self, *args, offline: bool | None = None, **kwargs) -> None:
        """``offline``: None chooses by itself; True or False forces the mode."""
        if offline is None:
            mode = choose_mode()
            offline = mode == "offline"
            if offline:
                log.warning("W&B: no API key or no network; logging offline "
                            "(`wandb sync` uploads the run later)")
            if mode == "disabled":
                kwargs["mode"] = "disabled"
        super().__init__(*args, offline=offline, **kwargs)

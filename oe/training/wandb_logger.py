"""A WandbLogger that goes offline by itself when there is no key or no network."""

from __future__ import annotations

import logging
import netrc
import os

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from oe.hub import reachable

log = logging.getLogger(__name__)


def _has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        path = os.environ.get("NETRC", os.path.expanduser("~/.netrc"))
        return netrc.netrc(path).authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def choose_mode() -> str:
    """``offline`` unless a key is set and the server answers (WANDB_MODE, if set, wins)."""
    if os.environ.get("WANDB_MODE") in ("offline", "online", "disabled"):
        return os.environ["WANDB_MODE"]
    return "online" if _has_key() and reachable("api.wandb.ai") else "offline"


# Keys of the whole resolved config of oe.fit, which it logs as the run's W&B config.
WHOLE_CONFIG_KEYS = ("model", "data", "trainer")


class AutoWandbLogger(WandbLogger):
    """WandbLogger, offline when there is no API key or no route to the server.

    Offline runs land in ``<save_dir>/wandb/offline-run-*``; ``wandb sync`` uploads them later.
    The hyper-parameters appear once in the run's config: see ``log_hyperparams``.
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
        if self._wandb_init.get("anonymous") is None:
            # Lightning always passes it; wandb >= 0.19 warns that it has no effect.
            self._wandb_init.pop("anonymous", None)

    @rank_zero_only
    def log_hyperparams(self, params) -> None:
        """Lightning's hyper-parameters (the model's and the data module's init arguments) are
        part of the whole resolved config that ``oe.fit`` logs as the run's config, under
        ``model`` and ``data``; logged again at the top level they would appear twice. Without
        that config (the logger used outside oe.fit) they are logged as usual."""
        if all(key in self.experiment.config.keys() for key in WHOLE_CONFIG_KEYS):
            return
        super().log_hyperparams(params)

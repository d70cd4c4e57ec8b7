"""Lightning's checkpoint file writer, made atomic: a kill or a full disk never leaves half a file.

``oe fit`` gives every strategy this writer (``ShardedTableStrategy`` takes it by default) and
``oe export`` writes its single-device checkpoint through it. The file format and the account of
a failed write (``write_failure``) are ``oe.distributed.checkpoint``'s; the atomic write is
``oe.files.write_atomically``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from oe.distributed.checkpoint import CheckpointWriteError, is_write_failure, write_failure
from oe.files import write_atomically


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temporary file beside the target, renamed over it once complete.

    A kill or a full disk leaves the previous file as it was (and at worst a ``.X.tmp`` file,
    removed by the next save); a failed write is one CheckpointWriteError.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path,
                        storage_options: Any | None = None) -> None:
        path = Path(path)

        def save(writing: Path) -> None:
            with open(writing, "wb") as stream:
                torch.save(checkpoint, stream)

        try:  # a kill leaves the temporary file to the next save to remove
            write_atomically(path, save, durable=True)
        except BaseException as err:
            if not is_write_failure(err):
                raise
            kept = f"; the previous {path.name} is kept" if path.exists() else ""
            raise CheckpointWriteError(f"could not write checkpoint {path}: "
                                       f"{write_failure(err)}{kept}") from None

"""What the streamed data modules share: rank/worker split, and resuming at the next batch.

A module's training stream (a ``NumberedBatches``) yields dicts with a ``position`` (the global
batch number); the last position trained on is kept and saved in the checkpoint, together with
the settings that define the stream (``stream_identity``), which must match when the run resumes.
"""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info


class NumberedBatches(IterableDataset):
    """The global batches ``first_position .. total_positions-1`` of one rank, each a dict with
    its ``position``, split over the loader's workers."""

    batches_per_epoch: int
    epochs: int
    first_position: int

    def batch(self, position: int) -> dict:
        """Global batch ``position``'s share of this rank, with ``position`` among its keys."""
        raise NotImplementedError

    @property
    def total_positions(self) -> int:
        return self.batches_per_epoch * self.epochs

    def __len__(self) -> int:
        # The whole stream, also when resumed: Lightning counts the epoch's batches on from its
        # restored progress, and sizes the schedule (estimated_stepping_batches) by this length.
        return self.total_positions

    def __iter__(self):
        info = get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        # The DataLoader takes batches from its workers in turn, so this keeps stream order.
        for position in range(self.first_position + worker, self.total_positions, n_workers):
            yield self.batch(position)


class ResumableStreamDataModule(L.LightningDataModule):
    """Base of data modules whose training data is a sequence of numbered global batches."""

    num_workers: int

    def __init__(self) -> None:
        super().__init__()
        self.next_position = 0

    def stream_identity(self) -> dict:
        """Settings that define the stream; a checkpoint resumes only where they are equal."""
        raise NotImplementedError

    def extra_state(self) -> dict:
        """More to keep in the checkpoint, not compared on resume."""
        return {}

    def _world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _loader(self, stream: Dataset) -> DataLoader:
        # Batches come whole from the stream; workers are new each epoch so that they see the
        # current resume position.
        return DataLoader(stream, batch_size=None, num_workers=min(self.num_workers, len(stream)),
                          persistent_workers=False)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        if self.trainer is not None and self.trainer.training:
            self.next_position = batch["position"] + 1
        return batch

    def state_dict(self) -> dict:
        return {"next_position": self.next_position, **self.stream_identity(),
                **self.extra_state()}

    def load_state_dict(self, state: dict) -> None:
        for key, own in self.stream_identity().items():
            if state.get(key) != own:
                raise ValueError(
                    f"checkpoint's data.{key} is {state.get(key)}, this run's is {own}: "
                    "resuming would not continue the same stream"
                )
        self.next_position = int(state["next_position"])

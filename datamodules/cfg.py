"""Streamed cfg3f sentences: generated on the fly, never stored.

Token ids: 0 pad, 1-3 the terminals, 4 BOS, 5 EOS. A row is BOS, one sentence, EOS, then
padding to the longest row of the batch (rounded up to a multiple of 8). Rows are padded rather
than packed: one sentence per row keeps attention within the sentence without a block mask
(so SDPA keeps its fast causal kernels), makes generation from BOS match training exactly, and
resets n-grams at the row start for free. The cost is the padding, about 45% of positions at a
batch of 32 (sentences have 64..729 symbols, mean ~250); it is excluded from the loss.

The stream is a sequence of global batches. Global batch p on rank r holds sentences
``[(b * W + r) * B, (b * W + r + 1) * B)`` where ``b`` is the p-th entry of epoch
``p // batches_per_epoch``'s seeded permutation, so every rank and worker reads a disjoint part
of one stream, whatever their numbers, and a resumed run starts at exactly the next batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from datamodules.stream import ResumableStreamDataModule
from oe.cfg import MAX_LENGTH, sample

PAD_ID, BOS_ID, EOS_ID = 0, 4, 5
VOCAB_SIZE = 6
MAX_SEQUENCE_LENGTH = MAX_LENGTH + 2  # BOS + 729 symbols + EOS


def collate(symbols: np.ndarray, lengths: np.ndarray, multiple: int = 8) -> torch.Tensor:
    """Rows ``BOS s EOS pad...`` [B, T] from zero-padded sentences ``symbols`` [B, >=max len]."""
    width = int(lengths.max()) + 2
    width = math.ceil(width / multiple) * multiple
    rows = np.zeros((len(lengths), width), dtype=np.int64)
    rows[:, 0] = BOS_ID
    n = min(symbols.shape[1], width - 1)
    rows[:, 1 : n + 1] = symbols[:, :n]
    rows[np.arange(len(lengths)), lengths + 1] = EOS_ID
    return torch.from_numpy(rows)


class CFGStream(IterableDataset):
    """Global batches ``first_position .. total_positions-1`` of one rank, split over workers."""

    def __init__(self, seed: int, batch_size: int, batches_per_epoch: int, epochs: int,
                 rank: int = 0, world_size: int = 1, first_position: int = 0,
                 shuffle_epochs: bool = True) -> None:
        self.seed = seed
        self.batch_size = batch_size
        self.batches_per_epoch = batches_per_epoch
        self.epochs = epochs
        self.rank = rank
        self.world_size = world_size
        self.first_position = first_position
        self.shuffle_epochs = shuffle_epochs

    @property
    def total_positions(self) -> int:
        return self.batches_per_epoch * self.epochs

    def __len__(self) -> int:
        return self.total_positions - self.first_position

    def batch_of(self, position: int) -> int:
        epoch, offset = divmod(position, self.batches_per_epoch)
        if not self.shuffle_epochs:
            return offset
        order = np.random.default_rng([self.seed, epoch]).permutation(self.batches_per_epoch)
        return int(order[offset])

    def sentence_indices(self, position: int) -> np.ndarray:
        first = (self.batch_of(position) * self.world_size + self.rank) * self.batch_size
        return np.arange(first, first + self.batch_size)

    def __iter__(self):
        info = get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        # The DataLoader takes batches from its workers in turn, so this keeps stream order.
        for position in range(self.first_position + worker, self.total_positions, n_workers):
            symbols, lengths = sample(self.seed, self.sentence_indices(position))
            yield {"input_ids": collate(symbols, lengths), "position": position}


class CFGDataModule(ResumableStreamDataModule):
    """cfg3f sentences for training (seed ``seed``) and validation (seed ``val_seed``).

    Args:
        batch_size: sentences per batch on each device.
        train_sentences: sentences in one epoch (the paper: 20M).
        epochs: passes over them; the stream ends after ``epochs`` epochs.
        val_sentences: size of the fixed validation set.
        seed: stream of the training sentences.
        val_seed: stream of the validation sentences; must differ from ``seed``.
        num_workers: DataLoader worker processes.
        shuffle_epochs: visit the batches of each epoch in a seeded random order.
    """

    vocab_size = VOCAB_SIZE
    pad_id = PAD_ID
    bos_id = BOS_ID
    eos_id = EOS_ID
    max_sequence_length = MAX_SEQUENCE_LENGTH

    def __init__(self, batch_size: int = 512, train_sentences: int = 20_000_000, epochs: int = 10,
                 val_sentences: int = 2048, seed: int = 0, val_seed: int = 1_000_003,
                 num_workers: int = 1, shuffle_epochs: bool = True) -> None:
        super().__init__()
        for name in ("batch_size", "train_sentences", "epochs", "val_sentences"):
            if locals()[name] < 1:
                raise ValueError(f"data.{name} must be >= 1, got {locals()[name]}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        if seed < 0 or val_seed < 0:
            raise ValueError("data.seed and data.val_seed must be >= 0")
        if seed == val_seed:
            raise ValueError(f"data.val_seed must differ from data.seed (both {seed})")
        self.batch_size = batch_size
        self.train_sentences = train_sentences
        self.epochs = epochs
        self.val_sentences = val_sentences
        self.seed = seed
        self.val_seed = val_seed
        self.num_workers = num_workers
        self.shuffle_epochs = shuffle_epochs

    def batches_per_epoch(self, world_size: int) -> int:
        n = self.train_sentences // (self.batch_size * world_size)
        if n < 1:
            raise ValueError(
                f"data.train_sentences ({self.train_sentences}) is smaller than one global batch "
                f"(data.batch_size {self.batch_size} x {world_size} devices)"
            )
        return n

    def train_stream(self, rank: int, world_size: int) -> CFGStream:
        return CFGStream(self.seed, self.batch_size, self.batches_per_epoch(world_size),
                         self.epochs, rank, world_size, self.next_position, self.shuffle_epochs)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_stream(*self._world()))

    def val_dataloader(self) -> DataLoader:
        rank, world_size = self._world()
        batch = min(self.batch_size, self.val_sentences)
        n_batches = self.val_sentences // (batch * world_size)
        if n_batches < 1:
            raise ValueError(
                f"data.val_sentences ({self.val_sentences}) gives no batch of {batch} "
                f"on each of {world_size} devices"
            )
        stream = CFGStream(self.val_seed, batch, n_batches, 1, rank, world_size,
                           shuffle_epochs=False)
        return self._loader(stream)

    def stream_identity(self) -> dict:
        return {"seed": self.seed, "batch_size": self.batch_size,
                "train_sentences": self.train_sentences}

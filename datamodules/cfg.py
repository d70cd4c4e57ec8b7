"""Streamed cfg3f sentences: generated on the fly, never stored.

Token ids: 0 pad, 1-3 the terminals, 4 BOS, 5 EOS. Two layouts of the same sentences:

- packed (the default): whole sentences ``BOS s EOS BOS s EOS ...`` in stream order, each token
  tagged with its sentence's document id (each pad position an id of its own). With
  ``row_tokens`` null (the default), each micro-batch's sentences are cut into as few rows of at
  most ``micro_batch_tokens`` as they need, of even length, so that almost no position is
  padding (99% real); with a number, rows of that many tokens (about 85% real at 1024). The
  model attends inside each sentence, restarts positions and n-grams at each BOS and ignores the
  target that crosses a boundary, so a packed step computes exactly what the padded step
  computes.
- padded: one sentence per row, ``BOS s EOS`` then padding to the longest row of the batch
  (rounded up to a multiple of 8). Only about 60% of the positions are real at a batch of 64
  (sentences have 64..729 symbols, mean ~250), but attention runs on the causal kernel.

Each yielded batch is one rank's share of a global batch, with ``micro_batch_rows``: the rows
that one forward/backward pass takes (``micro_batch_tokens`` / row width), so that a large
global batch is trained by gradient accumulation in bounded memory.

The stream is a sequence of global batches. Global batch p on rank r holds sentences
``[(b * W + r) * B, (b * W + r + 1) * B)`` where ``b`` is the p-th entry of epoch
``p // batches_per_epoch``'s seeded permutation, so every rank and worker reads a disjoint part
of one stream, whatever their numbers, and a resumed run starts at exactly the next batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader

from datamodules.stream import NumberedBatches, ResumableStreamDataModule
from oe.cfg import MAX_LENGTH, sample, sample_range
from oe.cfg.inside import loss_floor

PAD_ID, BOS_ID, EOS_ID = 0, 4, 5
VOCAB_SIZE = 6
MAX_SEQUENCE_LENGTH = MAX_LENGTH + 2  # BOS + 729 symbols + EOS


def pack(symbols: np.ndarray, lengths: np.ndarray, row_tokens: int,
         multiple: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Sentences packed whole, in order, into rows of at most ``row_tokens`` tokens.

    Returns ``(tokens [R, W], doc_ids [R, W])``: W is the longest filled row rounded up to a
    multiple of ``multiple`` (at most ``row_tokens``); sentence i has document id i, and each pad position
    an id of its own (``len(lengths)`` + its flat index), so that it is a document of one token:
    it attends to nothing real and sits at position 0.
    """
    sizes = lengths.astype(np.int64) + 2
    if sizes.max() > row_tokens:
        raise ValueError(f"a sentence of {int(sizes.max())} tokens does not fit a row of "
                         f"data.row_tokens ({row_tokens})")
    row_of = np.empty(len(sizes), dtype=np.int64)
    offset_of = np.empty(len(sizes), dtype=np.int64)
    row, used = 0, 0
    for i, size in enumerate(sizes.tolist()):
        if used + size > row_tokens:  # next-fit: a new row when the sentence does not fit whole
            row, used = row + 1, 0
        row_of[i], offset_of[i] = row, used
        used += size
    n_rows = row + 1
    fill = np.bincount(row_of, weights=sizes, minlength=n_rows).astype(np.int64)
    width = min(row_tokens, math.ceil(int(fill.max()) / multiple) * multiple)
    tokens = np.full((n_rows, width), PAD_ID, dtype=np.int64)
    doc_ids = len(sizes) + np.arange(n_rows * width, dtype=np.int64).reshape(n_rows, width)
    for i, (r, o, n) in enumerate(zip(row_of.tolist(), offset_of.tolist(), lengths.tolist())):
        tokens[r, o] = BOS_ID
        tokens[r, o + 1 : o + 1 + n] = symbols[i, :n]
        tokens[r, o + 1 + n] = EOS_ID
        doc_ids[r, o : o + n + 2] = i
    return torch.from_numpy(tokens), torch.from_numpy(doc_ids)


def next_fit_rows(sizes: list[int], row_tokens: int) -> int:
    """Rows that ``pack`` fills with sentences of ``sizes`` tokens."""
    rows, used = 1, 0
    for size in sizes:
        if used + size > row_tokens:
            rows, used = rows + 1, 0
        used += size
    return rows


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


class CFGStream(NumberedBatches):
    """Global batches ``first_position .. total_positions-1`` of one rank, split over workers."""

    def __init__(self, seed: int, batch_size: int, batches_per_epoch: int, epochs: int,
                 rank: int = 0, world_size: int = 1, first_position: int = 0,
                 shuffle_epochs: bool = True, packed: bool = False,
                 row_tokens: int | None = None, micro_batch_tokens: int | None = None) -> None:
        if packed and row_tokens is None and micro_batch_tokens is None:
            raise ValueError("packed rows need row_tokens or micro_batch_tokens")
        self.seed = seed
        self.batch_size = batch_size
        self.batches_per_epoch = batches_per_epoch
        self.epochs = epochs
        self.rank = rank
        self.world_size = world_size
        self.first_position = first_position
        self.shuffle_epochs = shuffle_epochs
        self.packed = packed
        self.row_tokens = row_tokens
        self.micro_batch_tokens = micro_batch_tokens

    def make_batch(self, symbols: np.ndarray, lengths: np.ndarray) -> dict:
        """The rows of these sentences in this stream's layout."""
        if self.packed:
            if self.row_tokens:
                tokens, doc_ids = pack(symbols, lengths, self.row_tokens)
            else:  # rows exactly as wide as the balanced length: a few distinct shapes
                width = self.balanced_row_tokens(lengths)
                tokens, doc_ids = pack(symbols, lengths, width, multiple=width)
            batch = {"input_ids": tokens, "doc_ids": doc_ids, "isolate_documents": True}
        else:
            batch = {"input_ids": collate(symbols, lengths)}
        rows, width = batch["input_ids"].shape
        budget = self.micro_batch_tokens
        batch["micro_batch_rows"] = rows if budget is None else max(1, budget // width)
        return batch

    def balanced_row_tokens(self, lengths: np.ndarray, step: int = 128) -> int:
        """The shortest row length (a multiple of ``step``) that packs these sentences into as
        few rows of at most ``micro_batch_tokens`` as their tokens need.

        A step of 128 is FlexAttention's block size, and it keeps the number of distinct row
        widths small: each is a new shape for compiled kernels."""
        sizes = (lengths.astype(np.int64) + 2).tolist()
        budget = self.micro_batch_tokens
        rows_needed = math.ceil(sum(sizes) / budget)
        width = math.ceil(max(sum(sizes) / rows_needed, max(sizes)) / step) * step
        while width < budget and next_fit_rows(sizes, width) > rows_needed:
            width += step
        return min(width, budget)

    def batch_of(self, position: int) -> int:
        epoch, offset = divmod(position, self.batches_per_epoch)
        if not self.shuffle_epochs:
            return offset
        order = np.random.default_rng([self.seed, epoch]).permutation(self.batches_per_epoch)
        return int(order[offset])

    def sentence_indices(self, position: int) -> np.ndarray:
        first = (self.batch_of(position) * self.world_size + self.rank) * self.batch_size
        return np.arange(first, first + self.batch_size)

    def batch(self, position: int) -> dict:
        symbols, lengths = sample(self.seed, self.sentence_indices(position))
        return {**self.make_batch(symbols, lengths), "position": position}


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
        packed: pack whole sentences into rows with document ids (see the module's docstring);
            false: one padded sentence per row.
        row_tokens: null (the default): rows as long as the micro-batch needs, cut evenly (the
            least padding: 1.6x the padded layout's useful tokens/s on CPU, ``oe bench train``);
            a number: rows of that many tokens, at least 731 (the longest sentence with BOS and
            EOS; positions restart at each sentence, so a row may be longer than
            ``block_size``), fixed shapes for compiled kernels.
        micro_batch_tokens: tokens (rows x row width) per forward/backward pass; a batch of more
            is trained by gradient accumulation, with the same update. Bounds activation memory.
    """

    vocab_size = VOCAB_SIZE
    pad_id = PAD_ID
    bos_id = BOS_ID
    eos_id = EOS_ID
    max_sequence_length = MAX_SEQUENCE_LENGTH

    def __init__(self, batch_size: int = 512, train_sentences: int = 20_000_000, epochs: int = 10,
                 val_sentences: int = 2048, seed: int = 0, val_seed: int = 1_000_003,
                 num_workers: int = 1, shuffle_epochs: bool = True, packed: bool = True,
                 row_tokens: int | None = None, micro_batch_tokens: int = 16384) -> None:
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
        if packed and row_tokens is not None and row_tokens < MAX_SEQUENCE_LENGTH:
            raise ValueError(f"data.row_tokens must be >= {MAX_SEQUENCE_LENGTH} (the longest "
                             f"sentence with BOS and EOS) with data.packed, got {row_tokens}")
        longest_row = (row_tokens or MAX_SEQUENCE_LENGTH) if packed else math.ceil(MAX_SEQUENCE_LENGTH / 8) * 8
        if micro_batch_tokens < longest_row:
            raise ValueError(f"data.micro_batch_tokens must be >= {longest_row} (the longest row "
                             f"of the {'packed' if packed else 'padded'} layout), "
                             f"got {micro_batch_tokens}")
        self.batch_size = batch_size
        self.train_sentences = train_sentences
        self.epochs = epochs
        self.val_sentences = val_sentences
        self.seed = seed
        self.val_seed = val_seed
        self.num_workers = num_workers
        self.shuffle_epochs = shuffle_epochs
        self.packed = packed
        self.row_tokens = row_tokens
        self.micro_batch_tokens = micro_batch_tokens

    def _layout(self) -> dict:
        return {"packed": self.packed, "row_tokens": self.row_tokens,
                "micro_batch_tokens": self.micro_batch_tokens}

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
                         self.epochs, rank, world_size, self.next_position, self.shuffle_epochs,
                         **self._layout())

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_stream(*self._world()))

    def _validation_batches(self, world_size: int) -> tuple[int, int]:
        """(sentences per batch, batches per rank) of the validation set."""
        batch = min(self.batch_size, self.val_sentences)
        n_batches = self.val_sentences // (batch * world_size)
        if n_batches < 1:
            raise ValueError(
                f"data.val_sentences ({self.val_sentences}) gives no batch of {batch} "
                f"on each of {world_size} devices"
            )
        return batch, n_batches

    def val_dataloader(self) -> DataLoader:
        rank, world_size = self._world()
        batch, n_batches = self._validation_batches(world_size)
        stream = CFGStream(self.val_seed, batch, n_batches, 1, rank, world_size,
                           shuffle_epochs=False, **self._layout())
        return self._loader(stream)

    def validation_loss_floor(self) -> float:
        """The least loss per predicted token (symbols and EOS) any model can reach on the
        validation sentences of all ranks, from the grammar's exact probabilities."""
        _, world_size = self._world()
        batch, n_batches = self._validation_batches(world_size)
        # Unshuffled, the ranks' validation batches are sentences 0 .. B * W * n - 1.
        return loss_floor(sample_range(self.val_seed, 0, batch * world_size * n_batches))

    def stream_identity(self) -> dict:
        return {"seed": self.seed, "batch_size": self.batch_size,
                "train_sentences": self.train_sentences}

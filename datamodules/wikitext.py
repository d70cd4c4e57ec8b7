"""Wikitext (or local text in its format) as packed blocks with document ids.

Text comes from the hub (``Salesforce/wikitext``, ``wikitext-103-raw-v1`` or ``wikitext-2-raw-v1``,
optionally streamed) or from local files (``data_files``, read by ``datasets``' ``text`` builder
with the line breaks kept, so rows look like the hub's). An article starts at a level-1 heading
line `` = Title = ``; each article is tokenised as ``<|endoftext|>`` + its text, the separator
GPT-2 was trained with.

``<|endoftext|>`` is also ``pad_id``: the model never scores it as a target (document boundaries
in a packed stream are arbitrary) and n-grams that reach back across an article boundary read it,
as if the article began the row. Each token carries its article's index (``doc_ids``).

Token ids are cached once per (corpus, tokenizer) under ``cache_dir`` as flat ``.npy`` arrays
(tokens, article starts), tokenised by ``num_workers`` processes. Training blocks are
``tokens[b*T : b*T + T + 1]`` (T = ``block_size``; inputs and targets overlap by one token). Every
epoch visits the blocks in a permutation seeded by ``(seed, epoch)``; global batch ``p`` on rank
``r`` holds blocks ``perm[(j*W + r)*B : (j*W + r + 1)*B]`` (j = p's index in its epoch), so a
resumed run continues at exactly the next batch, whatever the number of workers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from datamodules.stream import NumberedBatches, ResumableStreamDataModule
from oe.files import write_atomically
from oe.tokenizer import load_tokenizer, tokenizer_fingerprint, tokenizer_record

log = logging.getLogger(__name__)

EOT = "<|endoftext|>"
HEADING = re.compile(r"^ = [^=].* = \s*$")  # " = Title = " (level 2 is " = = Section = = ")
SPLITS = {"train": "train", "val": "validation"}


def split_articles(lines: Iterable[str]) -> Iterator[str]:
    """Articles of Wikitext rows: each level-1 heading starts a new one."""
    article: list[str] = []
    for line in lines:
        if HEADING.match(line) and any(s.strip() for s in article):
            yield "".join(article)
            article = []
        article.append(line)
    if any(s.strip() for s in article):
        yield "".join(article)


def train_bpe(texts: Iterable[str], vocab_size: int, path: Path):
    """A byte-level BPE trained on ``texts`` (GPT-2's scheme), ``<|endoftext|>`` at id 0, saved to ``path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    write_atomically(path, lambda writing: tokenizer.save(str(writing)))  # a cut-off file is never cached
    return tokenizer


class BlockStream(NumberedBatches):
    """Batches ``first_position .. total_positions-1`` of packed blocks for one rank."""

    def __init__(self, tokens_path: Path, docs_path: Path, block_size: int, batch_size: int,
                 seed: int, epochs: int, rank: int = 0, world_size: int = 1,
                 first_position: int = 0, shuffle: bool = True, max_blocks: int | None = None) -> None:
        self.tokens_path, self.docs_path = tokens_path, docs_path
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None
        tokens, _ = self.arrays()
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.epochs = epochs
        self.rank = rank
        self.world_size = world_size
        self.first_position = first_position
        self.shuffle = shuffle
        self.n_blocks = (len(tokens) - 1) // block_size
        if max_blocks is not None:
            self.n_blocks = min(self.n_blocks, max_blocks)
        self.batches_per_epoch = self.n_blocks // (batch_size * world_size)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        # Memory-mapped, and opened again in each worker rather than pickled to it.
        if self._arrays is None:
            self._arrays = np.load(self.tokens_path, mmap_mode="r"), np.load(self.docs_path)
        return self._arrays

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": None}

    def blocks_of(self, position: int) -> np.ndarray:
        epoch, j = divmod(position, self.batches_per_epoch)
        first = (j * self.world_size + self.rank) * self.batch_size
        if not self.shuffle:
            return np.arange(first, first + self.batch_size)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n_blocks)
        return order[first:first + self.batch_size]

    def batch(self, position: int) -> dict:
        starts = self.blocks_of(position) * self.block_size
        index = starts[:, None] + np.arange(self.block_size + 1)
        tokens, doc_starts = self.arrays()
        docs = np.searchsorted(doc_starts, index, side="right") - 1
        return {"input_ids": torch.from_numpy(np.asarray(tokens[index], dtype=np.int64)),
                "doc_ids": torch.from_numpy(docs.astype(np.int64)), "position": position}


class WikitextDataModule(ResumableStreamDataModule):
    """Packed Wikitext blocks for training and validation.

    Args:
        dataset: hub dataset (``Salesforce/wikitext``); ignored when ``data_files`` is given.
        name: its configuration: ``wikitext-103-raw-v1`` or ``wikitext-2-raw-v1``.
        data_files: local text files instead, ``{"train": path(s), "validation": path(s)}``.
        streaming: read the hub dataset as a stream instead of downloading it whole first.
        tokenizer: a hub id (``gpt2``), a ``tokenizer.json`` or a directory holding one, or
            ``bpe``: a byte-level BPE of ``bpe_vocab_size`` ids trained on the training text and
            saved in the cache, next to the token ids.
        bpe_vocab_size: vocabulary of the ``bpe`` tokenizer.
        block_size: tokens per training row (inputs; the row holds one more for the targets).
        batch_size: rows per batch on each device.
        epochs: passes over the training blocks.
        seed: block order.
        val_blocks: validation blocks used (None: all of the validation split).
        num_workers: tokenising processes and DataLoader workers.
        cache_dir: where token ids (and a trained tokenizer) are kept.
    """

    def __init__(self, dataset: str = "Salesforce/wikitext", name: str = "wikitext-103-raw-v1",
                 data_files: dict[str, str | list[str]] | None = None, streaming: bool = False,
                 tokenizer: str = "gpt2", bpe_vocab_size: int = 16384, block_size: int = 1024,
                 batch_size: int = 8, epochs: int = 1, seed: int = 0, val_blocks: int | None = None,
                 num_workers: int = 1, cache_dir: str = "data/cache") -> None:
        super().__init__()
        for field_name in ("block_size", "batch_size", "epochs"):
            if locals()[field_name] < 1:
                raise ValueError(f"data.{field_name} must be >= 1, got {locals()[field_name]}")
        if num_workers < 0 or seed < 0:
            raise ValueError("data.num_workers and data.seed must be >= 0")
        if val_blocks is not None and val_blocks < 1:
            raise ValueError(f"data.val_blocks must be >= 1 or null, got {val_blocks}")
        if data_files is not None:
            unknown = set(data_files) - set(SPLITS.values())
            if unknown or "train" not in data_files:
                raise ValueError(f"data.data_files must map 'train' (and 'validation') to text "
                                 f"files, got keys {sorted(data_files)}")
            for split, files in data_files.items():
                for f in [files] if isinstance(files, str) else files:
                    if not Path(f).is_file():
                        raise FileNotFoundError(f"data.data_files.{split}: {f} not found")
        self.save_hyperparameters()
        self.dataset, self.name, self.data_files = dataset, name, data_files
        self.streaming = streaming
        self.block_size, self.batch_size, self.epochs = block_size, batch_size, epochs
        self.seed, self.val_blocks, self.num_workers = seed, val_blocks, num_workers
        self.cache_dir = Path(cache_dir)
        self.tokenizer_file, self.tokenizer = self._tokenizer(tokenizer, bpe_vocab_size)
        self.vocab_size = self.tokenizer.get_vocab_size()
        pad = self.tokenizer.token_to_id(EOT)
        if pad is None:
            raise ValueError(f"data.tokenizer {tokenizer} has no {EOT} token; it is needed as the "
                             "article separator (GPT-2's tokenizer and the bpe one have it)")
        self.pad_id = self.bos_id = self.eos_id = pad
        self.max_sequence_length = block_size
        self.fingerprint = tokenizer_fingerprint(self.tokenizer)

    # -- corpus and tokenizer -------------------------------------------------------------
    def _source_key(self) -> str:
        if self.data_files is None:
            spec = {"dataset": self.dataset, "name": self.name}
        else:
            spec = {split: [(str(Path(f).resolve()), Path(f).stat().st_size, Path(f).stat().st_mtime_ns)
                            for f in ([files] if isinstance(files, str) else files)]
                    for split, files in sorted(self.data_files.items())}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def rows(self, split: str) -> Iterator[str]:
        """The text rows of ``split`` (``train`` or ``validation``)."""
        from oe.hub import offline_unless_reachable

        if self.data_files is None:
            offline_unless_reachable()  # without a route to the hub: the cache, or fail at once
        import datasets

        if self.data_files is not None:
            if split not in self.data_files:
                raise ValueError(f"data.data_files has no '{split}' split")
            ds = datasets.load_dataset("text", data_files={split: self.data_files[split]},
                                       split=split, keep_linebreaks=True, streaming=self.streaming)
        else:
            ds = datasets.load_dataset(self.dataset, self.name, split=split, streaming=self.streaming)
        for row in ds:
            yield row["text"]

    def _tokenizer(self, source: str, bpe_vocab_size: int):
        if source != "bpe":
            tokenizer = load_tokenizer(source)
            return source, tokenizer
        path = self.cache_dir / self._source_key() / f"bpe{bpe_vocab_size}" / "tokenizer.json"
        if path.is_file():
            try:
                return str(path), load_tokenizer(str(path))
            except ValueError as err:
                raise ValueError(f"{err}; it is this data module's cache: remove it, and the next "
                                 f"run trains it again") from err
        log.info("training a byte-level BPE of %d ids on the training text -> %s", bpe_vocab_size, path)
        return str(path), train_bpe(split_articles(self.rows("train")), bpe_vocab_size, path)

    def _cache_paths(self, split: str) -> tuple[Path, Path]:
        folder = self.cache_dir / self._source_key() / self.fingerprint
        return folder / f"{split}.tokens.npy", folder / f"{split}.docs.npy"

    def _tokenise(self, split: str) -> None:
        tokens_path, docs_path = self._cache_paths(split)
        if tokens_path.is_file() and docs_path.is_file():
            return
        tokenizer, pad = self.tokenizer, self.pad_id

        def encode(batch: dict) -> dict:
            return {"ids": [[pad, *e.ids] for e in tokenizer.encode_batch(batch["text"])]}

        articles = split_articles(self.rows(split))
        if self.streaming:
            pieces = (encode({"text": chunk})["ids"] for chunk in _chunks(articles, 256))
            encoded = (ids for piece in pieces for ids in piece)
        else:
            import datasets

            table = datasets.Dataset.from_dict({"text": list(articles)})
            procs = self.num_workers if self.num_workers > 1 and len(table) >= 2 * self.num_workers else None
            encoded = table.map(encode, batched=True, batch_size=64, num_proc=procs,
                                remove_columns=["text"], keep_in_memory=True)["ids"]
        lengths, flat = [], []
        for ids in encoded:
            lengths.append(len(ids))
            flat.append(np.asarray(ids, dtype=np.int32))
        if not flat:
            raise ValueError(f"the {split} split holds no text")
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        # The starts first: a cache counts as written once its tokens file is there.
        write_atomically(docs_path, lambda writing: _save_array(writing, starts))
        write_atomically(tokens_path, lambda writing: _save_array(writing, np.concatenate(flat)))
        log.info("%s: %d articles, %d tokens -> %s", split, len(lengths), starts[-1] + lengths[-1],
                 tokens_path)

    def token_files(self, split: str) -> tuple[Path, Path]:
        """Files of the flat token ids and article start offsets of ``split`` (tokenised once)."""
        self._tokenise(split)
        return self._cache_paths(split)

    # -- Lightning ---------------------------------------------------------------------------
    def prepare_data(self) -> None:
        for split in ("train", "validation"):
            if self.data_files is None or split in self.data_files:
                self._tokenise(split)

    def train_stream(self, rank: int = 0, world_size: int = 1) -> BlockStream:
        stream = BlockStream(*self.token_files("train"), self.block_size, self.batch_size, self.seed,
                             self.epochs, rank, world_size, self.next_position)
        if stream.batches_per_epoch < 1:
            raise ValueError(
                f"the training text has {stream.n_blocks} blocks of data.block_size "
                f"{self.block_size}, fewer than one global batch (data.batch_size "
                f"{self.batch_size} x {world_size} devices)"
            )
        return stream

    def val_stream(self, rank: int = 0, world_size: int = 1) -> BlockStream:
        batch = self.batch_size
        stream = BlockStream(*self.token_files("validation"), self.block_size, batch, self.seed, 1, rank,
                             world_size, shuffle=False, max_blocks=self.val_blocks)
        if stream.batches_per_epoch < 1:
            raise ValueError(
                f"the validation text has {stream.n_blocks} blocks of {self.block_size} tokens, "
                f"fewer than one batch of {batch} on each of {world_size} devices"
            )
        return stream

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_stream(*self._world()))

    def val_dataloader(self) -> DataLoader:
        if self.data_files is not None and "validation" not in self.data_files:
            return []
        return self._loader(self.val_stream(*self._world()))

    def stream_identity(self) -> dict:
        return {"seed": self.seed, "batch_size": self.batch_size, "block_size": self.block_size,
                "tokenizer_fingerprint": self.fingerprint}

    def tokenizer_record(self) -> dict[str, str]:
        """The tokenizer, as the model's checkpoints record it (oe.distributed.checkpoint.TokenizerRecord)."""
        return tokenizer_record(self.tokenizer, self.tokenizer_file)


def _save_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as stream:  # np.save on a name would add ".npy" to it
        np.save(stream, array)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk

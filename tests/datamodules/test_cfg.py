"""CFGDataModule: sharding over workers and ranks, validation split, exact resume."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from datamodules.cfg import BOS_ID, EOS_ID, PAD_ID, CFGDataModule, CFGStream, pack
from oe.cfg import accepts, sample_range
from oe.cfg.inside import loss_floor


def _sentences(batch: torch.Tensor) -> list[tuple[int, ...]]:
    """The sentences of rows ``BOS s EOS [BOS s EOS ...] pad...``, in order."""
    out = []
    for row in batch.tolist():
        start = 0
        while start < len(row) and row[start] == BOS_ID:
            end = row.index(EOS_ID, start)
            out.append(tuple(row[start + 1 : end]))
            start = end + 1
        assert start > 0 and all(t == PAD_ID for t in row[start:])
    return out


def test_rows_are_bos_sentence_eos_pad():
    stream = CFGStream(seed=2, batch_size=8, batches_per_epoch=3, epochs=1, shuffle_epochs=False)
    batch = next(iter(stream))["input_ids"]
    assert batch.shape[1] % 8 == 0
    sentences = _sentences(batch)
    assert accepts(sentences).all()
    assert [np.array(s) for s in sentences][3].tolist() == sample_range(2, 3, 1)[0].tolist()


def test_packed_rows_hold_the_same_sentences_in_order_with_document_ids():
    padded = CFGStream(seed=2, batch_size=16, batches_per_epoch=2, epochs=1, packed=False)
    packed = CFGStream(seed=2, batch_size=16, batches_per_epoch=2, epochs=1, packed=True,
                       row_tokens=800, micro_batch_tokens=1600)
    for a, b in zip(padded, packed):
        assert _sentences(b["input_ids"]) == _sentences(a["input_ids"])
        tokens, doc_ids = b["input_ids"], b["doc_ids"]
        assert tokens.shape[1] <= 800 and tokens.shape[0] < 16
        assert b["micro_batch_rows"] == 1600 // tokens.shape[1]
        real = tokens != PAD_ID
        # Sentence i carries id i; each pad position an id of its own, shared with nothing.
        assert sorted(set(doc_ids[real].tolist())) == list(range(16))
        pad_ids = doc_ids[~real].tolist()
        assert len(set(pad_ids)) == len(pad_ids) and min(pad_ids, default=16) >= 16
        assert (tokens[doc_ids == 3][[0, -1]] == torch.tensor([BOS_ID, EOS_ID])).all()


def test_one_balanced_row_per_micro_batch():
    stream = CFGStream(seed=2, batch_size=64, batches_per_epoch=1, epochs=1, packed=True,
                       row_tokens=None, micro_batch_tokens=4096)
    batch = next(iter(stream))
    tokens = batch["input_ids"]
    assert batch["micro_batch_rows"] == 1 and tokens.shape[1] <= 4096
    assert tokens.shape[0] == -(-int((tokens != PAD_ID).sum()) // 4096)  # as few rows as fit
    assert (tokens != PAD_ID).float().mean() > 0.9


def test_a_sentence_longer_than_a_row_is_refused():
    symbols = np.ones((1, 729), dtype=np.int64)
    with pytest.raises(ValueError, match="data.row_tokens"):
        pack(symbols, np.array([729]), row_tokens=730)


def test_two_workers_times_two_ranks_cover_the_stream_exactly_once():
    batch, n_batches, epochs = 4, 6, 2
    seen: list[tuple[int, ...]] = []
    per_rank = []
    for rank in range(2):
        stream = CFGStream(seed=9, batch_size=batch, batches_per_epoch=n_batches, epochs=epochs,
                           rank=rank, world_size=2)
        loader = DataLoader(stream, batch_size=None, num_workers=2)
        got = list(loader)
        assert [b["position"] for b in got] == list(range(n_batches * epochs))
        per_rank.append([s for b in got for s in _sentences(b["input_ids"])])
        seen += per_rank[-1]
    assert not set(per_rank[0]) & set(per_rank[1])
    expected = [tuple(s.tolist()) for s in sample_range(9, 0, batch * 2 * n_batches)]
    first_epoch = per_rank[0][: batch * n_batches] + per_rank[1][: batch * n_batches]
    assert sorted(first_epoch) == sorted(expected)  # no gap, no duplicate
    # Each epoch visits the same sentences, in another order.
    second_epoch = per_rank[0][batch * n_batches :] + per_rank[1][batch * n_batches :]
    assert sorted(second_epoch) == sorted(expected)
    assert per_rank[0][: batch * n_batches] != per_rank[0][batch * n_batches :]


def test_validation_set_is_separate_and_fixed():
    dm = CFGDataModule(batch_size=8, train_sentences=64, epochs=1, val_sentences=16, num_workers=0)
    val = [s for b in dm.val_dataloader() for s in _sentences(b["input_ids"])]
    train = [s for b in dm.train_dataloader() for s in _sentences(b["input_ids"])]
    assert len(val) == 16 and not set(val) & set(train)
    assert val == [s for b in dm.val_dataloader() for s in _sentences(b["input_ids"])]


def test_loss_floor_is_that_of_the_validation_sentences():
    dm = CFGDataModule(batch_size=8, train_sentences=64, epochs=1, val_sentences=20, num_workers=0)
    val = [s for b in dm.val_dataloader() for s in _sentences(b["input_ids"])]
    assert len(val) == 16  # whole batches only
    assert dm.validation_loss_floor() == pytest.approx(loss_floor(val))
    assert 0.6 < dm.validation_loss_floor() < 0.9


def test_bad_values_name_the_field():
    with pytest.raises(ValueError, match="data.batch_size"):
        CFGDataModule(batch_size=0)
    with pytest.raises(ValueError, match="data.val_seed"):
        CFGDataModule(seed=3, val_seed=3)
    with pytest.raises(ValueError, match="train_sentences"):
        CFGDataModule(batch_size=8, train_sentences=4).train_dataloader()


class _Recorder(L.LightningModule):
    """Records the positions and first tokens of the batches it trains on."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, int]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append((batch["position"], int(batch["input_ids"][:, 1:9].sum())))
        return (self.weight**2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(tmp_path, max_steps):
    return L.Trainer(max_steps=max_steps, default_root_dir=tmp_path, logger=False,
                     enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                     accelerator="cpu", devices=1)


def test_resume_restores_the_exact_next_batch(tmp_path):
    def datamodule():
        return CFGDataModule(batch_size=4, train_sentences=40, epochs=2, val_sentences=4,
                             num_workers=2)

    full = _Recorder()
    _trainer(tmp_path / "full", 12).fit(full, datamodule=datamodule())

    first = _Recorder()
    trainer = _trainer(tmp_path / "a", 7)
    trainer.fit(first, datamodule=datamodule())
    trainer.save_checkpoint(tmp_path / "mid.ckpt")

    resumed = _Recorder()
    _trainer(tmp_path / "b", 12).fit(resumed, datamodule=datamodule(),
                                     ckpt_path=tmp_path / "mid.ckpt")
    assert first.seen + resumed.seen == full.seen
    assert resumed.seen[0][0] == 7


def test_a_padded_run_resumes_packed_at_the_next_batch(tmp_path):
    def datamodule(packed: bool) -> CFGDataModule:
        return CFGDataModule(batch_size=4, train_sentences=40, epochs=1, val_sentences=4,
                             num_workers=0, packed=packed)

    trainer = _trainer(tmp_path / "a", 3)
    trainer.fit(_Recorder(), datamodule=datamodule(packed=False))
    trainer.save_checkpoint(tmp_path / "padded.ckpt")
    resumed = _Recorder()
    _trainer(tmp_path / "b", 5).fit(resumed, datamodule=datamodule(packed=True),
                                    ckpt_path=tmp_path / "padded.ckpt")
    assert [position for position, _ in resumed.seen] == [3, 4]

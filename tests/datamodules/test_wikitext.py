"""WikitextDataModule on local text in Wikitext's format: articles, packing, order, resume."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.wikitext import EOT, WikitextDataModule, split_articles
from tests.conftest import write_corpus


@pytest.fixture
def corpus(tmp_path):
    return {"train": write_corpus(tmp_path / "train.txt", 40, seed=0),
            "validation": write_corpus(tmp_path / "valid.txt", 8, seed=1)}


def _module(tmp_path, corpus, **kw):
    args = dict(data_files=corpus, tokenizer="bpe", bpe_vocab_size=300, block_size=32,
                batch_size=4, num_workers=0, cache_dir=str(tmp_path / "cache"))
    return WikitextDataModule(**{**args, **kw})


def test_articles_split_at_level_one_headings():
    rows = ["", " = A = \n", "", " = = Sub = = \n", " text a \n", "", " = B = \n", " text b \n"]
    assert list(split_articles(rows)) == [" = A = \n = = Sub = = \n text a \n",
                                          " = B = \n text b \n"]


def test_blocks_carry_article_ids_and_eot_separators(tmp_path, corpus):
    dm = _module(tmp_path, corpus)
    assert dm.tokenizer.token_to_id(EOT) == dm.pad_id == 0 and dm.vocab_size == 300
    stream = dm.train_stream()
    batch = stream.batch(0)
    ids, docs = batch["input_ids"], batch["doc_ids"]
    assert ids.shape == docs.shape == (4, 33)
    tokens_path, starts_path = dm.token_files("train")
    tokens, starts = np.load(tokens_path), np.load(starts_path)
    assert len(starts) == 40 and (tokens[starts] == dm.pad_id).all()  # every article opens with EOT
    assert int((tokens == dm.pad_id).sum()) == 40  # and EOT appears nowhere else
    # A new document id begins exactly where an EOT token stands.
    changes = docs[:, 1:] != docs[:, :-1]
    assert torch.equal(changes, ids[:, 1:] == dm.pad_id)
    # Text round trip: an article decodes back to its source text.
    article = tokens[starts[3]:starts[4]]
    text = dm.tokenizer.decode(article[1:].tolist())
    assert text.startswith(" = Article 0 3 = \n")


def test_order_is_seeded_covers_every_block_and_resumes(tmp_path, corpus):
    dm = _module(tmp_path, corpus, epochs=2)
    stream = dm.train_stream()
    n, per_epoch = stream.n_blocks, stream.batches_per_epoch
    seen = np.concatenate([stream.blocks_of(p) for p in range(per_epoch)])
    assert len(set(seen.tolist())) == len(seen) == per_epoch * 4 <= n
    assert not np.array_equal(stream.blocks_of(0), stream.blocks_of(per_epoch))  # epochs differ
    again = _module(tmp_path, corpus, epochs=2).train_stream()
    assert all(np.array_equal(stream.blocks_of(p), again.blocks_of(p)) for p in range(2 * per_epoch))
    # Two ranks read disjoint blocks of one global batch.
    r0, r1 = (dm.train_stream(rank, 2).blocks_of(0) for rank in (0, 1))
    assert not set(r0.tolist()) & set(r1.tolist())
    # Resume: the state sends a fresh module (and 2 loader workers) on from the next batch.
    full = [b["position"] for b in stream]
    dm.next_position = 5
    resumed = _module(tmp_path, corpus, epochs=2)
    resumed.load_state_dict(dm.state_dict())
    loader = torch.utils.data.DataLoader(pickle.loads(pickle.dumps(resumed.train_stream())),
                                         batch_size=None, num_workers=2)
    got = [(b["position"], b["input_ids"]) for b in loader]
    assert [p for p, _ in got] == full[5:]
    assert torch.equal(got[0][1], stream.batch(5)["input_ids"])
    with pytest.raises(ValueError, match="seed"):
        _module(tmp_path, corpus, seed=1).load_state_dict(dm.state_dict())


def test_token_cache_is_reused(tmp_path, corpus):
    dm = _module(tmp_path, corpus)
    path, _ = dm.token_files("train")
    stamp = path.stat().st_mtime_ns
    again = _module(tmp_path, corpus)
    assert again.token_files("train")[0] == path and path.stat().st_mtime_ns == stamp
    assert again.fingerprint == dm.fingerprint


def test_bad_input_is_named(tmp_path, corpus):
    with pytest.raises(FileNotFoundError, match="data.data_files.train"):
        _module(tmp_path, {"train": str(tmp_path / "missing.txt")})
    with pytest.raises(ValueError, match="fewer than one global batch"):
        _module(tmp_path, corpus, block_size=100_000).train_stream()
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        _module(tmp_path, corpus, tokenizer=str(tmp_path / "nope"))


def test_a_cut_off_cached_tokenizer_is_named(tmp_path, corpus):
    dm = _module(tmp_path, corpus)
    cached = Path(dm.tokenizer_file)
    assert [p.name for p in cached.parent.iterdir()] == ["tokenizer.json"]  # no temporary left
    cached.write_text(cached.read_text()[:100])
    with pytest.raises(ValueError) as caught:
        _module(tmp_path, corpus)
    assert str(caught.value).startswith(f"tokenizer {cached} cannot be read (")
    assert str(caught.value).endswith("it is this data module's cache: remove it, and the next "
                                      "run trains it again")
    cached.unlink()
    assert _module(tmp_path, corpus).fingerprint == dm.fingerprint


def test_streaming_reads_the_same_tokens(tmp_path, corpus):
    dm = _module(tmp_path, corpus)
    streamed = _module(tmp_path, corpus, streaming=True, tokenizer=dm.tokenizer_file,
                       cache_dir=str(tmp_path / "cache_streamed"))
    for split in ("train", "validation"):
        for a, b in zip(dm.token_files(split), streamed.token_files(split)):
            assert a != b and np.array_equal(np.load(a), np.load(b))


@pytest.mark.parametrize("configs", [
    ["wikitext_baseline.yaml"], ["wikitext_oe3.yaml"], ["wikitext_oe3.yaml", "wikitext_oe2.yaml"],
    ["wikitext_baseline.yaml", "presets/wikitext_quick.yaml"], ["wikitext_gpt2_oe.yaml"],
    ["wikitext_gpt2_frequent.yaml"],
])
def test_configs_parse(configs):
    from types import SimpleNamespace

    from oe.cli.sweep import check_point

    args = [a for c in configs for a in ("--config", f"configs/{c}")]
    check_point(SimpleNamespace(name="+".join(configs), fit_args=args))  # SweepError if not


def test_m_sweep_covers_the_log_grid():
    from oe.cli.sweep import load_sweep

    sweep = load_sweep("configs/sweeps/wikitext_m.yaml")
    moduli = sorted({p.values["model.over_encoding.modulus"] for p in sweep.points()})
    assert moduli[0] == 20_000 and moduli[-1] == 12_800_000 and len(sweep.points()) == 18
    assert all(math.gcd(m + 2 * i, 50257) == 1 for m in moduli for i in range(2))


def test_worker_processes_tokenise_alike(tmp_path, corpus):
    dm = _module(tmp_path, corpus)
    parallel = _module(tmp_path, corpus, num_workers=2, tokenizer=dm.tokenizer_file,
                       cache_dir=str(tmp_path / "cache_parallel"))
    for a, b in zip(dm.token_files("train"), parallel.token_files("train")):
        assert a != b and np.array_equal(np.load(a), np.load(b))

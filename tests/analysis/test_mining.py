"""oe.analysis.mining counts (exact against a Counter, bounded when pruned) and the frequent-n-gram rows."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest
import torch

from datamodules.wikitext import WikitextDataModule
from oe.models.frequent_ngrams import FrequentNgramConfig, FrequentNgramEmbedding
from oe.analysis.mining import count_ngrams
from oe.cli.mine import main
from oe.models.ngram import ngram_ids, ngram_windows
from tests.conftest import write_corpus

ORDERS = [2, 3, 4, 5]


def reference_counts(tokens: np.ndarray, starts: np.ndarray, order: int) -> Counter:
    counts = Counter()
    bounds = list(starts) + [len(tokens)]
    for a, b in zip(bounds[:-1], bounds[1:]):  # n-grams inside one article only
        doc = tokens[a:b].tolist()
        counts.update(tuple(doc[i:i + order]) for i in range(len(doc) - order + 1))
    return counts


@pytest.fixture(scope="module")
def mined(tmp_path_factory):
    root = tmp_path_factory.mktemp("mine")
    train = write_corpus(root / "train.txt", 30, seed=3)
    out = root / "mined.jsonl"
    args = ["--train_file", train, "--tokenizer", "bpe", "--bpe_vocab_size", "300",
            "--cache_dir", str(root / "cache"), "--num_workers", "0", "--orders", "2,3,4,5",
            "--top_k", "50", "--capacity", "1000000", "--chunk_tokens", "997", "--out", str(out)]
    assert main(args) == 0
    dm = WikitextDataModule(data_files={"train": train}, tokenizer="bpe", bpe_vocab_size=300,
                            cache_dir=str(root / "cache"), num_workers=0)
    tokens_path, starts_path = dm.token_files("train")
    return out, dm, np.load(tokens_path), np.load(starts_path)


def test_counts_equal_a_counter(mined):
    out, dm, tokens, starts = mined
    lines = out.read_text().splitlines()
    meta = json.loads(lines[0])["meta"]
    assert meta["vocab_size"] == dm.vocab_size and meta["tokens_counted"] == len(tokens)
    assert meta["max_undercount"] == {str(n): 0 for n in ORDERS}
    rows = [json.loads(line) for line in lines[1:]]
    for n in ORDERS:
        ref = reference_counts(tokens, starts, n)
        written = [r for r in rows if r["order"] == n]
        assert len(written) == 50
        assert all(r["count"] == ref[tuple(r["tokens"])] for r in written)
        counts = [r["count"] for r in written]
        assert counts == sorted(counts, reverse=True)
        # The top 50: nothing left out is more frequent than the least frequent written.
        kept = {tuple(r["tokens"]) for r in written}
        assert max(c for g, c in ref.items() if g not in kept) <= counts[-1]
        assert written[0]["text"] == dm.tokenizer.decode(written[0]["tokens"])


def test_pruned_counts_stay_within_their_bound(mined):
    _, dm, tokens, starts = mined
    counters = count_ngrams(tokens, starts, [2, 3], dm.vocab_size, capacity=200,
                            chunk_tokens=500, progress=False)
    for n, counter in counters.items():
        assert counter.prunes > 0 and len(counter.counts) <= 200
        ref = reference_counts(tokens, starts, n)
        for gram, count in counter.top(100):
            assert ref[tuple(gram)] - counter.max_undercount <= count <= ref[tuple(gram)]
        heavy = [g for g, c in ref.most_common(5)]
        assert set(heavy) <= {tuple(g) for g, _ in counter.top(200)}


def test_rows_match_exactly_the_kept_ngrams(mined):
    out, dm, tokens, starts = mined
    config = FrequentNgramConfig(path=str(out), orders=[2, 3, 5], top_k=20, init="mean")
    emb = FrequentNgramEmbedding(dm.vocab_size, 16, config, pad_id=dm.pad_id)
    rows = [json.loads(line) for line in out.read_text().splitlines()[1:]]
    kept = {n: [tuple(r["tokens"]) for r in rows if r["order"] == n][:20] for n in (2, 3, 5)}
    batch = torch.from_numpy(tokens[:2 * 97].astype(np.int64)).view(2, 97)
    docs = torch.from_numpy(np.searchsorted(starts, np.arange(2 * 97), side="right") - 1).view(2, 97)
    ids = emb.row_ids(batch, docs)
    hits = 0
    for k, n in enumerate((2, 3, 5)):
        windows = ngram_windows(batch, n, dm.pad_id, docs)
        for b in range(2):
            for t in range(97):
                window = tuple(windows[b, t].tolist())
                expected = kept[n].index(window) + k * 20 if window in kept[n] else emb.num_rows
                assert int(ids[k, b, t]) == expected
                hits += expected != emb.num_rows
    assert hits > 20  # the test text is made of frequent words: many positions match
    weight = emb.ngram.embeddings["frequent"].weight
    first = kept[3][0]
    torch.testing.assert_close(weight[20], emb.token.weight[list(first)].mean(0))
    # The embedding adds exactly the matched rows.
    with torch.no_grad():
        out_vectors = emb(batch, docs)
        expected = emb.token(batch) + sum(
            torch.where((ids[k] < emb.num_rows)[..., None], weight[ids[k].clamp(max=emb.num_rows - 1)], 0.0)
            for k in range(3))
        torch.testing.assert_close(out_vectors, expected)
        # Generation: the newest position from the last few tokens alone.
        torch.testing.assert_close(emb.forward_last(batch[:, :60]), emb(batch[:, :60])[:, -1:])


def test_windows_hash_to_ngram_ids():
    tokens = torch.randint(0, 50, (3, 20), generator=torch.Generator().manual_seed(0))
    docs = torch.tensor([[0] * 7 + [1] * 13] * 3)
    for n in (2, 4):
        windows = ngram_windows(tokens, n, 0, docs)
        flat = windows.view(-1, n)
        again = ngram_ids(flat, n, 50, 10**9)[:, -1].view(3, 20)
        assert torch.equal(again, ngram_ids(tokens, n, 50, 10**9, 0, docs))


def test_bad_mined_file_is_named(mined, tmp_path):
    out, dm, _, _ = mined
    with pytest.raises(ValueError, match="fewer than top_k=51"):
        FrequentNgramEmbedding(dm.vocab_size, 8, FrequentNgramConfig(str(out), [2], top_k=51))
    with pytest.raises(ValueError, match="mined with a tokenizer of 300 ids"):
        FrequentNgramEmbedding(1000, 8, FrequentNgramConfig(str(out), [2], top_k=5))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(out.read_text().splitlines()[0] + '\n{"order": 2, "tokens": [1]}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: 2-gram \[1\] must hold 2 token ids"):
        FrequentNgramEmbedding(dm.vocab_size, 8, FrequentNgramConfig(str(bad), [2], top_k=1))
    with pytest.raises(FileNotFoundError, match="oe mine"):
        FrequentNgramEmbedding(dm.vocab_size, 8, FrequentNgramConfig(str(tmp_path / "no.jsonl")))


def test_bad_corpus_and_output_fail_before_the_work_and_write_nothing(mined, tmp_path, capsys):
    out, _, _, _ = mined
    good = str(out.parent / "train.txt")
    (tmp_path / "blank.txt").write_text("\n \n")
    (tmp_path / "binary.txt").write_bytes(b"text \xff\xfe\n")
    cases = [(["--train_file", str(tmp_path / "blank.txt")], "holds no text"),
             (["--train_file", str(tmp_path / "binary.txt")], "is not UTF-8 text"),
             (["--train_file", str(tmp_path)], "is a directory; give text files"),
             (["--train_file", good, "--out", str(tmp_path)], "--out .* is a folder"),
             (["--train_file", good, "--out", str(tmp_path / "blank.txt" / "m.jsonl")],
              "cannot be written: .*blank.txt is a file")]
    for args, message in cases:
        if "--out" not in args:
            args = [*args, "--out", str(tmp_path / "mined.jsonl")]
        assert main([*args, "--tokenizer", "bpe", "--cache_dir", str(tmp_path / "cache")]) == 2
        assert re.search(message, capsys.readouterr().err), message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["binary.txt", "blank.txt"]

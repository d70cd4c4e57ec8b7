"""oe.cli.generate: prompts from a file or stdin, JSON lines out, host tables decode alike."""

from __future__ import annotations

import io
import json
import random

import pytest
import torch

from datamodules.wikitext import train_bpe
from oe.cli.generate import main
from oe.distributed.checkpoint import TOKENIZER_KEY
from oe.models.embedding import OverEncodingConfig
from oe.models.gpt import BackboneConfig
from oe.tokenizer import tokenizer_fingerprint
from oe.training.lm import LanguageModel
from tests.conftest import sentence


@pytest.fixture
def checkpoint(tmp_path):
    rng = random.Random(0)
    tokenizer = train_bpe([sentence(rng, 10) for _ in range(200)], 300, tmp_path / "tok.json")
    torch.manual_seed(0)
    lm = LanguageModel(vocab_size=tokenizer.get_vocab_size(),
                       backbone=BackboneConfig(n_layer=2, n_head=2, n_embd=16, block_size=64),
                       over_encoding=OverEncodingConfig(orders=[2, 3], modulus=1009,
                                                        shard_tables=False))
    path = tmp_path / "model.ckpt"
    torch.save({"hyper_parameters": dict(lm.hparams), "state_dict": lm.state_dict(),
                TOKENIZER_KEY: {"tokenizer_file": str(tmp_path / "tok.json"),
                                "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer)}}, path)
    return path


def _run(capsys, argv) -> list[dict]:
    assert main(argv) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_host_tables_give_the_same_completions_as_device_tables(checkpoint, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the river city\n\nthe team\nan album of the war\n")
    common = ["--ckpt", str(checkpoint), "--prompts", str(prompts), "--max_new_tokens", "8",
              "--top_k", "20", "--seed", "3", "--batch_size", "2", "--device", "cpu"]
    on_device = _run(capsys, common)
    on_host = _run(capsys, [*common, "--tables_on", "cpu"])
    assert [r["prompt"] for r in on_device] == ["the river city", "the team", "an album of the war"]
    assert on_host == on_device
    assert any(r["completion"] for r in on_device)


def test_prompts_come_from_stdin(checkpoint, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("the river\n"))
    rows = _run(capsys, ["--ckpt", str(checkpoint), "--max_new_tokens", "4", "--temperature", "0",
                         "--device", "cpu"])
    assert len(rows) == 1 and rows[0]["prompt"] == "the river"


def test_bad_input_is_one_line(checkpoint, tmp_path, monkeypatch, capsys):
    truncated, text = tmp_path / "cut.ckpt", tmp_path / "notes.ckpt"
    truncated.write_bytes(checkpoint.read_bytes()[:5000])
    text.write_text("not a checkpoint\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the river\n")
    no_tokenizer = tmp_path / "cfg.ckpt"
    saved = torch.load(checkpoint, weights_only=False)
    del saved[TOKENIZER_KEY]
    torch.save(saved, no_tokenizer)
    run = ["--device", "cpu", "--max_new_tokens", "2"]
    cases = {
        "truncated": (["--ckpt", str(truncated), "--prompts", str(prompts)],
                      f"error: checkpoint {truncated} "),
        "text": (["--ckpt", str(text), "--prompts", str(prompts)],
                 f"error: checkpoint {text} is not a PyTorch checkpoint"),
        "empty prompts": (["--ckpt", str(checkpoint), "--prompts", str(empty)],
                          f"error: --prompts {empty} holds no prompt"),
        "missing prompts": (["--ckpt", str(checkpoint), "--prompts", str(tmp_path / "no.txt")],
                            f"error: --prompts {tmp_path / 'no.txt'} not found"),
        "temperature": (["--ckpt", str(checkpoint), "--prompts", str(prompts), "--temperature",
                         "-1"], "error: --temperature must be >= 0, got -1.0"),
        "no tokenizer": (["--ckpt", str(no_tokenizer), "--prompts", str(prompts)],
                         f"error: checkpoint {no_tokenizer} has no tokenizer"),
    }
    for case, (argv, start) in cases.items():
        assert main([*argv, *run]) == 2, case
        captured = capsys.readouterr()
        assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, (case, captured)
        assert captured.err.startswith(start), (case, captured.err)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["--ckpt", str(checkpoint), *run]) == 2
    assert capsys.readouterr().err == "error: --prompts stdin holds no prompt (no non-blank line)\n"

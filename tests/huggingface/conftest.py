"""Builders of the export tests: a tiny model of a real tokenizer, saved as oe fit saves it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from oe.distributed.checkpoint import TOKENIZER_KEY
from oe.models.embedding import OverEncodingConfig
from oe.tokenizer import load_tokenizer, tokenizer_fingerprint
from tests.conftest import tiny_backbone, tiny_gpt2_dir, tiny_language_model

# Over-Encoding 1-2-3 with tables small enough to be exact, large init so they matter.
OE3 = OverEncodingConfig(orders=[2, 3], k=2, modulus=1001, init_std=0.5, shard_tables=False)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    return tiny_gpt2_dir(tmp_path_factory.mktemp("tokenizer"))


def save_checkpoint(path: Path, tokenizer_file: Path, over_encoding: OverEncodingConfig | None,
                    seed: int = 0, **fields) -> Path:
    """A checkpoint with what oe fit records: hyper-parameters, state dict, tokenizer record."""
    tokenizer = load_tokenizer(str(tokenizer_file))
    fields.setdefault("backbone", tiny_backbone(n_layer=2, block_size=64))
    lm = tiny_language_model(tokenizer.get_vocab_size(), over_encoding, seed=seed,
                             pad_id=tokenizer.token_to_id("<|endoftext|>"), **fields)
    torch.save({"hyper_parameters": dict(lm.hparams), "state_dict": lm.state_dict(),
                TOKENIZER_KEY: {"tokenizer_file": str(tokenizer_file),
                                "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer)}}, path)
    return path

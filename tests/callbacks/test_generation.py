"""Generation accuracy: real samples from a model, parsed, and graded below full validity."""

from __future__ import annotations

import numpy as np
import torch

from callbacks.generation import sample_and_check
from datamodules.cfg import PAD_ID, VOCAB_SIZE
from oe.cfg import accepts
from oe.models.build import build_model
from oe.models.gpt import BackboneConfig
from tests.cfg.reference_parser import reference_viable_prefix


def test_samples_are_parsed_and_graded_by_their_longest_viable_prefix():
    torch.manual_seed(0)
    model = build_model(VOCAB_SIZE, PAD_ID, BackboneConfig(n_layer=1, n_head=2, n_embd=16,
                                                           block_size=1024)).gpt
    generator = torch.Generator().manual_seed(1)
    accepted, lengths, viable, texts = sample_and_check(model, 6, 3, generator)
    assert len(accepted) == len(lengths) == len(viable) == len(texts) == 6
    symbols = [np.frombuffer(t.encode(), dtype=np.uint8).astype(np.int64) - ord("0") for t in texts]
    assert list(lengths) == [len(s) for s in symbols]
    assert list(accepted) == list(accepts(symbols) & (lengths <= 729))
    assert list(viable) == [reference_viable_prefix(s) if np.isin(s, (1, 2, 3)).all()
                            else reference_viable_prefix(s[: np.flatnonzero(~np.isin(s, (1, 2, 3)))[0]])
                            for s in symbols]
    assert np.all(viable <= lengths)
    assert np.all(viable[accepted] == lengths[accepted])

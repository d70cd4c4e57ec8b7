"""oe.hub: without a route to the hub, a hub load fails at once with one line naming the way out
(instead of half a minute of retries)."""

from __future__ import annotations

import time

import datasets.config
import huggingface_hub.constants
import pytest

from oe.evaluation.tasks import load_items
from oe.hub import offline_unless_reachable
from oe.tokenizer import load_tokenizer


def _unreachable_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    for module, name in ((huggingface_hub.constants, "HF_HUB_OFFLINE"),
                         (datasets.config, "HF_HUB_OFFLINE"), (datasets.config, "HF_DATASETS_OFFLINE")):
        monkeypatch.setattr(module, name, getattr(module, name))  # restored after the test


def test_an_unreachable_hub_fails_a_task_at_once_with_the_local_way(tmp_path, monkeypatch):
    _unreachable_hub(tmp_path, monkeypatch)
    offline_unless_reachable.cache_clear()
    started = time.monotonic()
    try:
        with pytest.raises(FileNotFoundError) as raised:
            load_items("piqa")
    finally:
        offline_unless_reachable.cache_clear()
    message = str(raised.value)
    assert "\n" not in message
    assert "the hub (127.0.0.1) cannot be reached and no copy is cached" in message
    assert "--data_dir D with D/piqa.jsonl" in message
    assert time.monotonic() - started < 20  # no retries (they took 30 s and more)
    assert huggingface_hub.constants.HF_HUB_OFFLINE and datasets.config.HF_HUB_OFFLINE


def test_an_unreachable_hub_names_the_local_way_for_a_tokenizer(tmp_path, monkeypatch):
    _unreachable_hub(tmp_path, monkeypatch)
    offline_unless_reachable.cache_clear()
    try:
        with pytest.raises(FileNotFoundError) as raised:
            load_tokenizer("gpt2")  # oe mine --config configs/wikitext_gpt2_frequent.yaml, offline
    finally:
        offline_unless_reachable.cache_clear()
    message = str(raised.value)
    assert "could not get tokenizer.json of hub model 'gpt2'" in message
    assert "give a tokenizer.json or a local directory holding one instead" in message
    assert "model.safetensors" not in message  # a tokenizer needs no weights

"""Builders shared by the tests: tiny models, tiny HF checkpoints, small local data.

Tests make their own data (no hub is reachable) in the formats real runs read, so the same
loading code runs: Wikitext-format text files, JSONL in the task data sets' field names, and a
random GPT-2 saved in HF format with a byte-level BPE tokenizer.json.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess

import pytest
import lightning as L
import torch
import torch.distributed as dist

from datamodules.wikitext import train_bpe
from oe.evaluation.examples import NOUNS, VERBS, sentence, write_example_tasks  # noqa: F401
from oe.models.embedding import OverEncodingConfig
from oe.models.gpt import BackboneConfig
from oe.training.lm import LanguageModel, OptimizerConfig


@pytest.fixture(autouse=True)
def no_process_group_left_behind():
    """Each test starts without a process group or the variables a rendezvous leaves.

    A strategy that trains in this process sets MASTER_PORT and keeps its TCP store listening;
    a later test that launches ranks of its own would inherit the port and find it taken.
    """
    environ = dict(os.environ)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()
    os.environ.clear()
    os.environ.update(environ)


def tiny_backbone(**fields) -> BackboneConfig:
    """One layer, two heads, width 16: the smallest backbone that exercises every path."""
    return BackboneConfig(**{"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 32, **fields})


def tiny_language_model(vocab_size: int = 11, over_encoding: OverEncodingConfig | None = None,
                        seed: int = 0, **fields) -> LanguageModel:
    """A LanguageModel on ``tiny_backbone()`` (``backbone=``/``optimizer=`` override), seeded."""
    torch.manual_seed(seed)
    fields.setdefault("backbone", tiny_backbone())
    fields.setdefault("optimizer", OptimizerConfig())
    return LanguageModel(vocab_size=vocab_size, over_encoding=over_encoding, **fields)


class FirstGradients(L.Callback):
    """The gradients the optimiser sees at the first step (before clipping)."""

    def __init__(self) -> None:
        self.grads: dict[str, torch.Tensor] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not self.grads:
            self.grads = {k: p.grad.clone() for k, p in pl_module.named_parameters()
                          if p.grad is not None}


def assert_steps_equal_forward(gpt, tokens: torch.Tensor, window: int = 3) -> None:
    """Generation steps with the KV cache (each fed the last ``window`` tokens, zeros before
    the start) give the full forward pass's logits at every position."""
    with torch.no_grad():
        full = gpt(tokens)
        cache = gpt.new_cache(tokens.shape[0], 16, tokens.device)
        padded = torch.cat([torch.zeros(tokens.shape[0], window - 1, dtype=torch.long), tokens], 1)
        for t in range(tokens.shape[1]):
            step = gpt.step(padded[:, t : t + window], cache)
            torch.testing.assert_close(step, full[:, t], atol=1e-5, rtol=1e-5)


# -- Wikitext-format text --------------------------------------------------------------------

WORDS = ("the of and to in a is was for on as with by he at from his an were are which this "
         "be had it not or have first one their its new after but who they has her two been "
         "river city team album song war game film year season church school island").split()


def write_corpus(path, n_articles: int, seed: int, paragraphs: int = 3) -> str:
    """A Wikitext-format file: ' = Title = ' headings, ' = = Section = = ', text lines."""
    rng = random.Random(seed)
    lines = []
    for a in range(n_articles):
        lines += ["", f" = Article {seed} {a} = ", ""]
        for p in range(paragraphs):
            if p == 1:
                lines += [f" = = Section {p} = = ", ""]
            words = [rng.choice(WORDS) for _ in range(rng.randint(30, 80))]
            lines += [" " + " ".join(words) + " . ", ""]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


# -- multiple-choice task files and a tiny GPT-2 with its tokenizer ---------------------------

# Task files in the local format oe evaluate reads: the library's own example writer.
write_task_files = write_example_tasks


def tiny_gpt2_dir(directory, seed: int = 0):
    """A random GPT-2 in HF format with a byte-level BPE tokenizer.json of its vocabulary."""
    transformers = pytest.importorskip("transformers")
    rng = random.Random(seed)
    text = [sentence(rng, 12) for _ in range(400)] + ["How do I Question: Answer: Cleaning a [title]"]
    tokenizer = train_bpe(text, 320, directory / "tokenizer.json")
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=tokenizer.get_vocab_size(), n_positions=64,
                                     n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)
    transformers.GPT2LMHeadModel(config).save_pretrained(directory)
    return directory



@contextlib.contextmanager
def full_disk(folder, size_bytes: int):
    """A real file system of ``size_bytes`` at ``folder`` (a tmpfs) for as long as the block runs.

    Skips the test, with the reason, where mounting is not permitted (it needs root or
    CAP_SYS_ADMIN); ``file_size_limit`` fails writes anywhere.
    """
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs",
                              str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"a tmpfs cannot be mounted here ({mounted.stderr.strip() or 'not root'}); "
                    f"the RLIMIT_FSIZE case covers a failed write")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@contextlib.contextmanager
def file_size_limit(size_bytes: int):
    """Writes past ``size_bytes`` into any one file fail (EFBIG) in this process while it runs:
    RLIMIT_FSIZE, with SIGXFSZ ignored so that the write fails instead of killing the process."""
    import resource

    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    previous = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size_bytes, previous[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous)
        signal.signal(signal.SIGXFSZ, previous_handler)

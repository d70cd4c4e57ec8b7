"""Decoding prompts with the key/value cache, the n-gram tables on the device or in host memory.

``decode`` is the one decoding loop: ``oe generate``, the lm-eval adapter's generation, the
generation-accuracy callback (``sample_from_bos``) and the benchmarks all run it. It continues a
batch of prompts of one length: one pass over the prompts fills the cache, then each step embeds
the newest token from the last few (``forward_last``) and attends to the cache. With
``HostTables`` the n-gram rows of the newest token are gathered on the host and moved to the
device as soon as that token is sampled, before the step that needs them.

Rows end at different lengths (cfg3f sentences run from a few tokens to hundreds). Once a quarter
of the rows still computed have sampled EOS, the cache keeps only the running rows, so a batch
costs about the work of its own rows rather than that of its longest row each step. The sampler
still draws for every row (an ended row certainly draws EOS), so dropping rows leaves the random
stream, and with it every sample, as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from oe.models.embedding import HostTables
from oe.models.gpt import GPT


@dataclass
class Sampling:
    """How the next token is drawn: temperature 0 is greedy; top_k / top_p truncate first."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def check(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"--temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"--top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"--top_p must be in (0, 1], got {self.top_p}")


# Running rows are dropped from the cache once they are at most this share of those computed.
KEEP_ROWS_BELOW = 0.75


def sample_next(logits: torch.Tensor, sampling: Sampling,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Next tokens [B] from logits [B, V]."""
    logits = logits.float()
    if sampling.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / sampling.temperature
    if sampling.top_k is not None and sampling.top_k < logits.shape[-1]:
        kth = logits.topk(sampling.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p is not None and sampling.top_p < 1:
        ordered, order = logits.sort(dim=-1, descending=True)
        before = ordered.softmax(dim=-1).cumsum(dim=-1) - ordered.softmax(dim=-1)
        ordered = ordered.masked_fill(before >= sampling.top_p, float("-inf"))  # keeps the top one
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, ordered)
    probs = logits.softmax(dim=-1)
    on = probs.device if generator is None else generator.device  # where the generator draws
    return torch.multinomial(probs.to(on), 1, generator=generator).squeeze(1).to(logits.device)


@torch.no_grad()
def decode(model: GPT, prompts: torch.Tensor, max_new_tokens: int, sampling: Sampling = Sampling(),
           generator: torch.Generator | None = None, eos_id: int | None = None,
           host_tables: HostTables | None = None,
           all_done: Callable[[bool], bool] = bool, drop_ended_rows: bool = True) -> torch.Tensor:
    """The tokens [B, <= max_new_tokens] sampled after ``prompts`` [B, P] (equal lengths).

    Stops early once every row has sampled ``eos_id``; rows that ended earlier repeat it.
    ``drop_ended_rows``: stop computing rows that ended (the module's docstring); False computes
    every row to the end, the same samples at more cost.
    ``host_tables``: the model's n-gram tables in host memory (``HostTables``).
    ``all_done`` turns this process's "every row ended" into the stopping decision, asked after
    each step but the last: with sharded n-gram tables every rank must take as many steps, so
    it agrees over the ranks.
    """
    sampling.check()
    batch, length = prompts.shape
    if length < 1 or max_new_tokens < 1:
        raise ValueError(f"need a prompt of >= 1 token and max_new_tokens >= 1, got {length} and "
                         f"{max_new_tokens}")
    # The last token sampled is never read back: the pass reads length + max_new_tokens - 1.
    if length + max_new_tokens - 1 > model.config.block_size:
        raise ValueError(f"prompt ({length}) + max_new_tokens ({max_new_tokens}) - 1 exceed "
                         f"model.backbone.block_size ({model.config.block_size})")
    device = model.position.weight.device
    prompts = prompts.to(device)
    embedding = model.embedding
    cache = model.new_cache(batch, length + max_new_tokens, device)
    x, memory = model.embed(prompts, ngram_rows=None if host_tables is None
                            else host_tables.rows(prompts))
    logits = model.logits(model.hidden(x, cache, memory=memory)[:, -1])
    # The last tokens a step embeds from; padding before the prompt reads as a row's start.
    context = embedding.context_size + 1
    pad = torch.full((batch, context), getattr(embedding, "pad_id", 0), dtype=torch.long,
                     device=device)
    recent = torch.cat([pad, prompts], dim=1)[:, -context:]
    out = torch.empty(batch, max_new_tokens, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    computed = torch.arange(batch, device=device)  # the rows the cache and the logits hold
    for t in range(max_new_tokens):
        nxt = sample_next(_every_row(logits, computed, batch, eos_id), sampling, generator)
        if eos_id is not None:
            nxt = nxt.masked_fill(done, eos_id)
        out[:, t] = nxt
        if t == max_new_tokens - 1:
            break
        recent = torch.cat([recent[:, 1:], nxt[:, None]], dim=1)
        left = batch  # rows that have not sampled EOS
        if eos_id is not None:
            done |= nxt == eos_id
            left = batch - int(done.sum())  # the step's one wait for the device
            if drop_ended_rows and 0 < left <= KEEP_ROWS_BELOW * len(computed):
                running = (~done).nonzero().squeeze(1)  # ended rows never run again
                cache.keep(torch.searchsorted(computed, running))
                computed = running
        # The next step's rows, looked up the moment its token is known.
        rows = None if host_tables is None else host_tables.last_rows(recent[computed])
        if all_done(left == 0):
            return out[:, : t + 1]
        logits = model.step(recent[computed], cache, rows)
    return out


def _every_row(logits: torch.Tensor, computed: torch.Tensor, batch: int,
               eos_id: int | None) -> torch.Tensor:
    """Logits [batch, V] from those of the ``computed`` rows; the others have ended and draw EOS."""
    if len(computed) == batch:
        return logits
    every = logits.new_full((batch, logits.shape[1]), float("-inf"))
    every[:, eos_id] = 0.0
    every[computed] = logits
    return every


def sample_from_bos(model: GPT, batch: int, bos_id: int, eos_id: int | None, max_new_tokens: int,
                    generator: torch.Generator | None = None, temperature: float = 1.0,
                    all_done: Callable[[bool], bool] = bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``batch`` sequences from BOS with the next-token distribution at ``temperature``.

    Returns ``(tokens [B, max_new_tokens], lengths [B])``: the tokens sampled after BOS (EOS
    after a row's first one), and for each row the number of tokens before its first EOS
    (``max_new_tokens`` where none came). ``all_done``: as in ``decode``.
    """
    device = model.position.weight.device
    prompts = torch.full((batch, 1), bos_id, dtype=torch.long, device=device)
    sampled = decode(model, prompts, max_new_tokens, Sampling(temperature), generator, eos_id,
                     all_done=all_done)
    tokens = torch.full((batch, max_new_tokens), -1 if eos_id is None else eos_id,
                        dtype=torch.long, device=device)
    tokens[:, : sampled.shape[1]] = sampled
    ended = tokens == eos_id if eos_id is not None else torch.zeros_like(tokens, dtype=torch.bool)
    lengths = torch.where(ended.any(dim=1), ended.long().argmax(dim=1),
                          torch.full_like(ended[:, 0], max_new_tokens, dtype=torch.long))
    return tokens, lengths

"""Zero-shot multiple-choice scoring, as lm-evaluation-harness scores it (``oe evaluate``).

For each item and choice the model reads ``context + " " + choice`` (the harness's encoding: the
pair is tokenised whole and the context's tokens cut off its front; an empty context is the
end-of-text token; the longest sequences are cut from the left to the model's block size). The
score is the summed log-probability of the choice's tokens only, each predicted from the
position before it. acc: the argmax score is the gold choice; acc_norm: the same with each
score divided by the choice's length in characters. Both come with the standard error of the
mean (sample standard deviation / sqrt(n), ``share_stderr``). An empty choice (no characters) follows the harness's
rule, made explicit here: its normalised score is -inf, so it is never the acc_norm prediction;
``empty_choices`` names such items so that the caller can say so.

Scoring is batched: requests are sorted by length and right-padded; with causal attention and
positions counted from the left, padding never reaches a scored position, and only the scored
positions go through the output head. An Over-Encoding model computes its n-gram ids over the
whole context + choice in the same forward pass.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from oe.models.gpt import GPT
from oe.evaluation.tasks import Item, TaskDataError


@dataclass(frozen=True)
class Request:
    item: int
    choice: int
    context: list[int]
    continuation: list[int]


def encode_pair(tokenizer, context: str, continuation: str, eot_id: int) -> tuple[list[int], list[int]]:
    """Token ids of (context, continuation) as the harness splits them."""
    spaces = len(context) - len(context.rstrip())
    if spaces:  # trailing whitespace of the context belongs to the continuation
        continuation = context[-spaces:] + continuation
        context = context[:-spaces]
    whole = tokenizer.encode(context + continuation).ids
    context_ids = tokenizer.encode(context).ids if context else []
    continuation_ids = whole[len(context_ids):]
    if not context_ids:
        context_ids = [eot_id]
    return context_ids, continuation_ids


def build_requests(items: list[Item], tokenizer, eot_id: int) -> list[Request]:
    requests = []
    for i, item in enumerate(items):
        for c, choice in enumerate(item.choices):
            context, continuation = encode_pair(tokenizer, item.context, " " + choice, eot_id)
            if not continuation:
                raise TaskDataError(f"item {i} choice {c} ({choice!r}) has no tokens to score")
            requests.append(Request(i, c, context, continuation))
    return requests


def _window(context: list[int], continuation: list[int], max_length: int) -> tuple[list[int], int]:
    """The model's input (context + continuation, cut to ``max_length`` from the left, last
    token dropped) and how many of its final positions predict continuation tokens."""
    full = (context + continuation)[-(max_length + 1):]
    return full[:-1], min(len(continuation), len(full) - 1)


@torch.no_grad()
def score_batch(model: GPT, pairs: list[tuple[list[int], list[int]]],
                pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """For each (context, continuation) of one batch: the summed log-probability of the
    continuation's tokens, and whether each of them is the model's argmax (lm-eval's
    ``is_greedy``). One forward pass over right-padded rows; only the scored positions go through
    the output head."""
    device = model.position.weight.device
    windows = [_window(context, continuation, model.config.block_size)
               for context, continuation in pairs]
    width = max(len(inputs) for inputs, _ in windows)
    tokens = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    rows, positions, targets = [], [], []
    for r, ((inputs, n_scored), (_, continuation)) in enumerate(zip(windows, pairs)):
        tokens[r, :len(inputs)] = torch.tensor(inputs)
        rows += [r] * n_scored
        positions += range(len(inputs) - n_scored, len(inputs))
        targets += continuation[-n_scored:]
    rows_t, targets_t = torch.tensor(rows, device=device), torch.tensor(targets, device=device)
    x, memory = model.embed(tokens.to(device))
    hidden = model.hidden(x, memory=memory)
    logp = model.logits(hidden[rows_t, torch.tensor(positions, device=device)]).float().log_softmax(-1)
    per_token = logp.gather(1, targets_t[:, None])[:, 0].double()
    sums = torch.zeros(len(pairs), dtype=torch.float64, device=device).index_add_(0, rows_t, per_token)
    misses = torch.zeros(len(pairs), dtype=torch.long, device=device).index_add_(
        0, rows_t, (logp.argmax(dim=-1) != targets_t).long())
    return sums.cpu().numpy(), (misses == 0).cpu().numpy()


@torch.no_grad()
def score_pairs(model: GPT, pairs: list[tuple[list[int], list[int]]], batch_size: int = 32,
                pad_id: int = 0, min_batches: int = 0,
                on_batch: Callable[[list[int]], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The scoring loop: for each (context, continuation), the summed log-probability of the
    continuation's tokens and whether each of them is the argmax, batched longest first.

    ``oe evaluate``, the downstream callback and the lm-eval adapter all score through it.
    ``min_batches``: run at least this many forward passes (one-token ones after the real
    batches), so that ranks sharing row-wise sharded tables make equally many collective calls.
    ``on_batch``: called with the indices of the pairs each batch scored (progress).
    """
    if any(not continuation for _, continuation in pairs):
        raise ValueError("a loglikelihood request has no continuation tokens to score")
    device = model.position.weight.device
    was_training = model.training
    model.eval()
    sums = np.zeros(len(pairs), dtype=np.float64)
    greedy = np.zeros(len(pairs), dtype=bool)
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    try:
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            sums[chosen], greedy[chosen] = score_batch(model, [pairs[i] for i in chosen], pad_id)
            if on_batch is not None:
                on_batch(chosen)
        for _ in range(min_batches - math.ceil(len(order) / batch_size)):
            x, memory = model.embed(torch.full((1, 1), pad_id, device=device))
            model.hidden(x, memory=memory)
    finally:
        model.train(was_training)
    return sums, greedy


def loglikelihoods(model: GPT, requests: list[Request], batch_size: int = 32,
                   pad_id: int = 0, min_batches: int = 0,
                   on_batch: Callable[[list[int]], None] | None = None) -> np.ndarray:
    """Summed log-probability of each request's continuation tokens (``score_pairs``)."""
    pairs = [(request.context, request.continuation) for request in requests]
    return score_pairs(model, pairs, batch_size, pad_id, min_batches, on_batch)[0]


def item_correct(items: list[Item], requests: list[Request], scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per item: 1.0 where acc (raw scores) and acc_norm (scores / choice characters) hit the gold."""
    per_item: list[list[float]] = [[0.0] * len(item.choices) for item in items]
    for request, score in zip(requests, scores):
        per_item[request.item][request.choice] = score
    acc = np.zeros(len(items))
    acc_norm = np.zeros(len(items))
    for i, item in enumerate(items):
        lls = np.array(per_item[i])
        lengths = np.array([float(len(c)) for c in item.choices])
        # The harness divides by the length as it is: an empty choice gets -inf (see empty_choices).
        normalised = np.full(len(lls), -np.inf)
        np.divide(lls, lengths, out=normalised, where=lengths > 0)
        acc[i] = float(np.argmax(lls) == item.gold)
        acc_norm[i] = float(np.argmax(normalised) == item.gold)
    return acc, acc_norm


def empty_choices(items: list[Item]) -> list[str]:
    """One line per empty choice (``<where>: choice C is empty``): acc_norm never picks it."""
    return [f"{item.where or f'item {i}'}: choice {c} is empty"
            for i, item in enumerate(items) for c, choice in enumerate(item.choices) if not choice]


def share_stderr(hits: float, n: float) -> float:
    """Standard error of a share ``hits / n`` of 0/1 outcomes: the sample standard deviation
    over sqrt(n), in closed form from the counts (so ranks can sum their counts first)."""
    if n <= 1:
        return float("nan")
    p = hits / n
    return math.sqrt(p * (1 - p) / (n - 1))


def summarise(acc: np.ndarray, acc_norm: np.ndarray) -> dict:
    return {"acc": float(acc.mean()), "acc_stderr": share_stderr(float(acc.sum()), len(acc)),
            "acc_norm": float(acc_norm.mean()),
            "acc_norm_stderr": share_stderr(float(acc_norm.sum()), len(acc_norm)),
            "n": int(len(acc))}


def evaluate_task(model: GPT, tokenizer, eot_id: int, items: list[Item], batch_size: int = 32,
                  pad_id: int = 0, progress: Callable[[float], None] | None = None) -> dict:
    """acc, acc_norm, their standard errors, n and items/s of one task.

    ``progress``: called after each batch with the items it finished (fractions: an item's
    choices may fall into different batches), e.g. a tqdm bar's ``update``.
    """
    started = time.perf_counter()
    requests = build_requests(items, tokenizer, eot_id)
    on_batch = None
    if progress is not None:
        share = [1.0 / len(items[r.item].choices) for r in requests]
        on_batch = lambda chosen: progress(sum(share[i] for i in chosen))  # noqa: E731
    scores = loglikelihoods(model, requests, batch_size, pad_id, on_batch=on_batch)
    result = summarise(*item_correct(items, requests, scores))
    result["items_per_s"] = len(items) / (time.perf_counter() - started)
    return result


def eot_id_of(tokenizer) -> int:
    eot = tokenizer.token_to_id("<|endoftext|>")
    if eot is None:
        raise ValueError("the tokenizer has no <|endoftext|> token (GPT-2's end-of-text)")
    return eot

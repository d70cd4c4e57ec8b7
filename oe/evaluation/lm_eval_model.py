"""The ``oe`` model of lm-evaluation-harness: any task of the harness on an ``oe`` checkpoint.

    oe lm-eval --model oe --model_args checkpoint=PATH --tasks piqa --batch_size 32

lm-eval 0.4.13 finds models in its own registry only (no entry points), so ``python -m
oe.lm_eval`` (``oe lm-eval``) is lm-eval's own command line with this model registered; in Python,
import this module and call ``lm_eval.simple_evaluate(model="oe", ...)``.

``model_args``: ``checkpoint`` (a ``.ckpt`` of ``oe fit``, its single-device export, or a
directory of ``oe export --format hf``), ``tokenizer`` (default: the one the checkpoint records
or the directory holds). ``--batch_size`` and ``--device`` as for any lm-eval model.

Log-likelihoods are ``oe.evaluation.scoring.score_pairs``'s: a request reads context +
continuation cut from the left to the block size, right-padded in batches sorted by length, and
an Over-Encoding model computes its n-gram ids over the whole context and continuation in the
same forward pass. Generation (``oe.models.decoding.decode``) is greedy unless ``do_sample``, with the backbone's
key/value cache; rows of one context length share a batch (the cache has one length for all).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import lm_eval
import lm_eval.models  # noqa: F401  (the harness's own models first: its registry fills lazily
import torch           # only while empty, so "oe" alone would hide them)
from lm_eval import utils as lm_eval_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from oe.evaluation.scoring import eot_id_of, score_pairs
from oe.huggingface.load import load_model
from oe.models.decoding import Sampling, decode

log = logging.getLogger(__name__)

# The harness's own task configs that read local JSONL (in the hub data sets' fields) as
# local_<task>, the files oe evaluate --data_dir reads: D/<task>.jsonl.
LOCAL_TASKS = {"hellaswag": "hellaswag/hellaswag.yaml", "piqa": "piqa/piqa.yaml",
               "storycloze": "storycloze/storycloze_2016.yaml",
               "xstorycloze_en": "xstorycloze/default_en.yaml"}
MODEL_ARGS = ("checkpoint", "tokenizer", "batch_size", "max_batch_size", "device", "max_gen_toks")
GEN_KWARGS = ("until", "max_gen_toks", "do_sample", "temperature")


class ModelArgsError(ValueError):
    """``model_args`` the oe model cannot use; the message (one line) says which and why."""


@register_model("oe")
class OELM(TemplateLM):
    """An ``oe`` network and its tokenizer behind lm-eval's model interface."""

    def __init__(self, checkpoint: str | None = None, tokenizer: str | None = None,
                 batch_size: int | str = 32, device: str | None = None,
                 max_gen_toks: int | str = 256, max_batch_size: int | None = None,
                 **unknown: Any) -> None:
        super().__init__()
        if unknown:
            raise ModelArgsError(f"model_args: unknown key(s) {', '.join(sorted(unknown))}; "
                             f"the oe model takes {', '.join(MODEL_ARGS)}")
        if checkpoint is None:
            raise ModelArgsError("model_args: checkpoint=PATH is required (a .ckpt of oe fit or a "
                             "directory of oe export --format hf)")
        if str(batch_size).startswith("auto"):
            raise ModelArgsError("batch_size auto is not supported by the oe model; give a number")
        self.batch_size = int(batch_size)
        self.max_gen_toks = int(max_gen_toks)
        if self.batch_size < 1 or self.max_gen_toks < 1:
            raise ModelArgsError("batch_size and max_gen_toks must be >= 1")
        self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self._device.type == "cuda" and not torch.cuda.is_available():
            # lm-eval's command line asks for cuda:0 unless told otherwise; its hf model, too,
            # runs on the CPU then.
            log.warning("device %s asked for, but no GPU is available: running on the CPU", device)
            self._device = torch.device("cpu")
        try:
            self.model, self.tokenizer = load_model(checkpoint, tokenizer)
        except (FileNotFoundError, ValueError) as err:  # a missing file, no tokenizer, ...
            raise ModelArgsError(f"model_args checkpoint={checkpoint}: {err}") from err
        self.model.to(self._device)
        self.checkpoint = str(checkpoint)
        self._eot = eot_id_of(self.tokenizer)

    # -- the tokenizer ------------------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self._eot

    @property
    def max_length(self) -> int:
        return self.model.config.block_size

    @property
    def tokenizer_name(self) -> str:
        return self.checkpoint

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return self.tokenizer.encode(string).ids

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=False)

    # -- log-likelihoods ----------------------------------------------------------------------

    def _loglikelihood_tokens(self, requests: list[tuple[Any, list[int], list[int]]],
                              disable_tqdm: bool = False, override_bs: int | None = None,
                              **kwargs: Any) -> list[tuple[float, bool]]:
        """(summed log-probability, whether every token is the argmax) per request."""
        sums, greedy = score_pairs(self.model, [(context, continuation)
                                                for _, context, continuation in requests],
                                   override_bs or self.batch_size, self._eot)
        out = []
        for request, total, is_greedy in zip(requests, sums, greedy):
            result = (float(total), bool(is_greedy))
            self.cache_hook.add_partial("loglikelihood", request[0], result)
            out.append(result)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Whole-text log-likelihoods: disjoint windows of the block size, each read after as much
        preceding text as fits, their sums added."""
        windows, owners = [], []
        for index, (text,) in enumerate(request.args for request in requests):
            for context, continuation in map(lm_eval_utils.make_disjoint_window,
                                             lm_eval_utils.get_rolling_token_windows(
                                                 token_list=self.tok_encode(text),
                                                 prefix_token=self.prefix_token_id,
                                                 max_seq_len=self.max_length, context_len=1)):
                windows.append((None, context, continuation))
                owners.append(index)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, self._loglikelihood_tokens(windows)):
            totals[owner] += logprob
        for request, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", (request.args[0],), total)
        return totals

    # -- generation ---------------------------------------------------------------------------

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Text generated after each context until a stop string, end of text or max_gen_toks."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        prepared = []
        for index, request in enumerate(requests):
            context, gen_kwargs = request.args
            settings = self._generation_settings(gen_kwargs)
            budget = self.max_length - settings["max_gen_toks"]
            if budget < 1:
                raise ValueError(f"max_gen_toks {settings['max_gen_toks']} leaves no room for a "
                                 f"context in the block size {self.max_length}")
            ids = (self.tok_encode(context) or [self.prefix_token_id])[-budget:]
            prepared.append((ids, settings))
            key = (len(ids), settings["max_gen_toks"], settings["do_sample"], settings["temperature"])
            groups[key].append(index)
        out = [""] * len(requests)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chosen = indices[start:start + self.batch_size]
                texts = self._generate_batch([prepared[i][0] for i in chosen],
                                             [prepared[i][1]["until"] for i in chosen],
                                             prepared[chosen[0]][1])
                for i, text in zip(chosen, texts):
                    out[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return out

    def _generation_settings(self, gen_kwargs: dict) -> dict:
        unknown = sorted(set(gen_kwargs) - set(GEN_KWARGS))
        if unknown:
            raise ValueError(f"generation kwargs {', '.join(unknown)} are not supported by the oe "
                             f"model; it takes {', '.join(GEN_KWARGS)}")
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        temperature = float(gen_kwargs.get("temperature", 0.0))
        do_sample = bool(gen_kwargs.get("do_sample", False)) and temperature > 0
        return {"until": until, "max_gen_toks": int(gen_kwargs.get("max_gen_toks", self.max_gen_toks)),
                "do_sample": do_sample, "temperature": temperature}

    def _generate_batch(self, contexts: list[list[int]], until: list[list[str]], settings: dict) -> list[str]:
        """``oe.models.decoding.decode`` over rows of one length; each text cut at its first
        stop string (rows are independent, so tokens after a stop change nothing before it)."""
        sampling = Sampling(temperature=settings["temperature"] if settings["do_sample"] else 0.0)
        tokens = decode(self.model, torch.tensor(contexts, dtype=torch.long), settings["max_gen_toks"],
                        sampling, eos_id=self._eot)
        texts = []
        for row, ids in enumerate(tokens.tolist()):
            text = self.tok_decode(ids[:ids.index(self._eot)] if self._eot in ids else ids)
            for stop in until[row]:
                if stop:
                    text = text.split(stop)[0]
            texts.append(text)
        return texts

def write_local_tasks(directory: str | Path, data_dir: str | Path,
                      tasks: tuple[str, ...] = tuple(LOCAL_TASKS)) -> list[str]:
    """Task configs ``local_<task>`` in ``directory`` for lm-eval's ``include_path``: the harness's
    own config of each task (prompt, preprocessing, choices) over ``data_dir/<task>.jsonl``, with
    acc and acc_norm. Returns the task names; a missing file is one FileNotFoundError naming it."""
    directory, data_dir = Path(directory), Path(data_dir)
    harness_tasks = Path(lm_eval.__file__).parent / "tasks"
    directory.mkdir(parents=True, exist_ok=True)
    names = []
    for task in tasks:
        if task not in LOCAL_TASKS:
            raise ValueError(f"no local config for task {task!r}; choose from {', '.join(LOCAL_TASKS)}")
        data = data_dir / f"{task}.jsonl"
        if not data.is_file():
            raise FileNotFoundError(f"{data} not found: the local {task} task reads it "
                                    "(the hub data set's fields, one JSON object a line)")
        config = {"include": str(harness_tasks / LOCAL_TASKS[task]), "task": f"local_{task}",
                  "tag": [], "dataset_path": "json", "dataset_name": None,
                  "dataset_kwargs": {"data_files": {"validation": str(data.resolve())}},
                  "training_split": None, "validation_split": "validation", "test_split": None,
                  "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                                  for m in ("acc", "acc_norm")]}
        (directory / f"local_{task}.yaml").write_text(json.dumps(config, indent=2))
        names.append(f"local_{task}")
    return names

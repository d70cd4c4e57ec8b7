"""``oe generate``: continue text prompts with a trained model (key/value cache).

    oe generate --ckpt runs/x/checkpoints/last.ckpt --prompts prompts.txt
    echo "The river" | oe generate --pretrained gpt2 --max_new_tokens 40 --top_k 50
    oe generate --ckpt X.ckpt --prompts p.txt --tables_on cpu --device cuda

Prompts are the lines of ``--prompts`` (``-`` or none: standard input), blank lines skipped.
Prompts of one token length are decoded together, ``--batch_size`` at a time; each result is
one JSON line ``{"prompt": ..., "completion": ...}`` on standard output, in the prompts' order.
Sampling: ``--temperature`` (0: greedy), ``--top_k``, ``--top_p``, ``--seed``; a row stops at
GPT-2's end-of-text token.

``--tables_on cpu`` keeps the n-gram tables in host memory (pinned with a GPU) and moves only
the rows each step needs to the device (``oe.models.embedding.HostTables``), looked up as soon
as the step's token is sampled; ``device`` (the default) keeps them with the model.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from oe.cli.flags import Parser

# torch and the model code are imported after the command line is parsed: --help answers at once.


def read_prompts(source: str | None) -> list[str]:
    """The non-blank lines of file ``source``, or of standard input for None or ``-``."""
    if source is None or source == "-":
        lines = sys.stdin.read().splitlines()
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"--prompts {path} not found")
        lines = path.read_text().splitlines()
    prompts = [line for line in lines if line.strip()]
    if not prompts:
        raise ValueError(f"--prompts {source or 'stdin'} holds no prompt (no non-blank line)")
    return prompts


def place_model(model, device: torch.device, tables_on: str) -> HostTables | None:
    """Move ``model`` to ``device``; with ``tables_on`` cpu, its n-gram tables to host memory."""
    from oe.models.embedding import HostTables, OverEncoding

    model.eval()
    if tables_on == "device":
        model.to(device)
        return None
    if not isinstance(model.embedding, OverEncoding):
        raise ValueError("--tables_on cpu needs a model with Over-Encoding tables; this one has "
                         f"{type(model.embedding).__name__}")
    host_tables = HostTables(model.embedding, device)  # takes the tables out of the model
    model.to(device)
    return host_tables


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 written, 2 bad input (one ``error:`` line naming the flag or file)."""
    parser = Parser(prog="oe generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="a checkpoint of oe.fit (plain or exported tables)")
    source.add_argument("--pretrained", help="a GPT-2 checkpoint: hub id or local directory")
    parser.add_argument("--tokenizer", help="tokenizer source (default: the recorded one)")
    parser.add_argument("--prompts", help="file of prompts, one a line (default: stdin)")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top_k", type=int, default=None)
    parser.add_argument("--top_p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda")
    parser.add_argument("--tables_on", choices=["device", "cpu"], default="device")
    args = parser.parse_args(argv)
    import torch

    from oe.models.decoding import Sampling, decode

    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.max_new_tokens < 1:
        parser.error(f"--max_new_tokens must be >= 1, got {args.max_new_tokens}")
    try:
        device = torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                              if args.device == "auto" else args.device)
    except RuntimeError as err:
        parser.error(f"--device {args.device}: {str(err).splitlines()[0]}")
    try:
        sampling = Sampling(args.temperature, args.top_k, args.top_p)
        sampling.check()
        prompts = read_prompts(args.prompts)

        from oe.cli.evaluate import load_checkpoint, load_pretrained
        from oe.evaluation.scoring import eot_id_of

        model, tokenizer = (load_checkpoint(args.ckpt, args.tokenizer) if args.ckpt
                            else load_pretrained(args.pretrained, args.tokenizer))
        host_tables = place_model(model, device, args.tables_on)
        eos_id = eot_id_of(tokenizer)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    encoded = [tokenizer.encode(p).ids for p in prompts]
    by_length: dict[int, list[int]] = defaultdict(list)
    for index, ids in enumerate(encoded):
        by_length[len(ids)].append(index)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    completions: dict[int, str] = {}
    for length, indices in sorted(by_length.items()):
        for start in range(0, len(indices), args.batch_size):
            chosen = indices[start : start + args.batch_size]
            batch = torch.tensor([encoded[i] for i in chosen])
            out = decode(model, batch, args.max_new_tokens, sampling, generator, eos_id,
                         host_tables).cpu()
            for i, row in zip(chosen, out.tolist()):
                ended = row.index(eos_id) if eos_id in row else len(row)
                completions[i] = tokenizer.decode(row[:ended])
    for index, prompt in enumerate(prompts):
        print(json.dumps({"prompt": prompt, "completion": completions[index]}))
    return 0

"""``oe export CKPT OUT``: a training checkpoint as a single-device checkpoint or a Hugging Face model.

``--format ckpt`` (the default): a training checkpoint ``CKPT`` is the dense state plus its table
folder (every rank's rows and their optimiser state, torch.distributed.checkpoint). OUT holds the
model alone, every table row in its plain state dict, for evaluation and generation in one
process: ``LanguageModel.load_from_checkpoint(OUT)`` or ``oe evaluate --ckpt OUT``. Optimiser and
loop states are left out; the format is ``oe.distributed.checkpoint``'s.

``--format hf``: OUT is a Hugging Face model directory with the tokenizer
(``oe.huggingface.export``): a baseline is a plain GPT-2; an Over-Encoding / Over-Decoding model is
an ``oe_gpt`` directory loaded with ``trust_remote_code=True`` (``oe`` installed), its n-gram
tables gathered one at a time. Both formats run in one process, no process group needed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

from oe.distributed.checkpoint import TABLE_KEY, single_device_checkpoint
from oe.cli.flags import Parser


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="oe export", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint written during training (X.ckpt)")
    parser.add_argument("out", help="where to write the export (a file for ckpt, a directory for hf)")
    parser.add_argument("--format", choices=("ckpt", "hf"), default="ckpt",
                        help="ckpt: single-device Lightning checkpoint; hf: Hugging Face directory")
    parser.add_argument("--tokenizer", help="hf: tokenizer.json, its directory or a hub id "
                                            "(default: the one the checkpoint records)")
    parser.add_argument("--without_tokenizer", action="store_true",
                        help="hf: write no tokenizer files (a model trained on token ids)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        print(f"error: {out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    if out.resolve() == Path(args.checkpoint).resolve():
        print("error: OUT must differ from the checkpoint it is exported from", file=sys.stderr)
        return 2
    if args.format == "ckpt" and (args.tokenizer or args.without_tokenizer):
        print("error: --tokenizer and --without_tokenizer are for --format hf", file=sys.stderr)
        return 2
    export = export_hf if args.format == "hf" else export_checkpoint
    try:
        message = export(args, out)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(message)
    return 0


def export_checkpoint(args: argparse.Namespace, out: Path) -> str:
    exported = single_device_checkpoint(args.checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    torch.save(exported, tmp)
    tmp.replace(out)
    rows = sum(r for s in exported[TABLE_KEY].values() for _, r, _ in s["tables"])
    return f"wrote {out}: {len(exported['state_dict'])} tensors, {rows:,} n-gram rows"


def export_hf(args: argparse.Namespace, out: Path) -> str:
    from oe.huggingface.export import export_hf as write

    # Written beside OUT and moved into place whole: a failed export leaves no half directory.
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        kind, model_type = write(args.checkpoint, partial, args.tokenizer, not args.without_tokenizer)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    partial.replace(out)
    how = "AutoModelForCausalLM.from_pretrained(OUT)" if model_type == "gpt2" else \
        "AutoModelForCausalLM.from_pretrained(OUT, trust_remote_code=True) (needs oe installed)"
    return f"wrote {out}: {kind} model as {model_type}; load it with {how}"


if __name__ == "__main__":
    sys.exit(main())

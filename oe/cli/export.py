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

OUT is written beside its place and moved there whole, so a failed export leaves nothing behind.
What the export reads is never touched: an OUT that is the checkpoint, holds it or its table
folder, or lies inside that folder is refused, and so is ``--overwrite`` of a folder that is not
an exported model. Exit status: 0 written, 1 the write failed (a full disk), 2 bad input.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from oe.cli.flags import Parser

# oe.distributed.checkpoint (torch) is imported where it is used, after the command line is parsed,
# so that ``oe export --help`` answers at once.


def check_out(out: Path, checkpoint: Path, format_: str, overwrite: bool) -> None:
    """One ValueError unless ``out`` may be written without touching what the export reads."""
    from oe.distributed.checkpoint import table_dir

    source, target = checkpoint.resolve(), out.resolve()
    read = [source, table_dir(checkpoint).resolve()]
    if any(target == p or p in target.parents for p in read):
        raise ValueError(f"OUT {out} is the checkpoint {checkpoint} or lies in its table folder, "
                         f"which the export reads; give another OUT")
    if any(target in p.parents for p in read):
        raise ValueError(f"OUT {out} holds the checkpoint {checkpoint} (or its table folder), "
                         f"which the export reads; give another OUT")
    if not out.exists():
        return
    if not overwrite:
        raise ValueError(f"{out} exists; pass --overwrite to replace it")
    if format_ == "ckpt" and out.is_dir():
        raise ValueError(f"OUT {out} is a folder; --format ckpt writes a file (such as "
                         f"{out}/model.ckpt)")
    if format_ == "hf" and out.is_dir() and not (out / "config.json").is_file():
        raise ValueError(f"OUT {out} is a folder but not an exported model (no config.json); "
                         f"--overwrite replaces only a previous export: give another OUT")


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
    from oe.distributed.checkpoint import CheckpointWriteError

    out = Path(args.out)
    if args.format == "ckpt" and (args.tokenizer or args.without_tokenizer):
        print("error: --tokenizer and --without_tokenizer are for --format hf", file=sys.stderr)
        return 2
    export = export_hf if args.format == "hf" else export_checkpoint
    try:
        check_out(out, Path(args.checkpoint), args.format, args.overwrite)
        message = export(args, out)
    except (CheckpointWriteError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1 if isinstance(err, CheckpointWriteError) else 2  # 1: not written; 2: bad input
    print(message)
    return 0


def export_checkpoint(args: argparse.Namespace, out: Path) -> str:
    from oe.distributed.checkpoint import TABLE_KEY
    from oe.distributed.export import single_device_checkpoint
    from oe.training.checkpoint_io import AtomicCheckpointIO

    exported = single_device_checkpoint(args.checkpoint)
    AtomicCheckpointIO().save_checkpoint(exported, out)  # whole or not at all
    rows = sum(r for s in exported[TABLE_KEY].values() for _, r, _ in s["tables"])
    return f"wrote {out}: {len(exported['state_dict'])} tensors, {rows:,} n-gram rows"


def export_hf(args: argparse.Namespace, out: Path) -> str:
    from oe.distributed.checkpoint import CheckpointWriteError, is_write_failure, write_failure
    from oe.huggingface.export import export_hf as write

    # Written beside OUT and moved into place whole: a failed export leaves no half directory.
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        kind, model_type = write(args.checkpoint, partial, args.tokenizer, not args.without_tokenizer)
    except BaseException as err:
        shutil.rmtree(partial, ignore_errors=True)
        if is_write_failure(err) and not isinstance(err, FileNotFoundError):  # not an input
            raise CheckpointWriteError(f"could not write {out}: {write_failure(err)}; nothing "
                                       f"was written") from None
        raise
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    partial.replace(out)
    how = "AutoModelForCausalLM.from_pretrained(OUT)" if model_type == "gpt2" else \
        "AutoModelForCausalLM.from_pretrained(OUT, trust_remote_code=True) (needs oe installed)"
    return f"wrote {out}: {kind} model as {model_type}; load it with {how}"

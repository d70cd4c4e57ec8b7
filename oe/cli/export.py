"""``python -m oe.export CKPT OUT``: a single-device checkpoint from a sharded-table checkpoint.

A training checkpoint ``CKPT`` is the dense state plus ``CKPT.tables/`` (every rank's rows and
their optimiser state, torch.distributed.checkpoint). OUT holds the model alone, every table row
in its plain state dict, for evaluation and generation in one process:
``LanguageModel.load_from_checkpoint(OUT)`` or ``python -m oe.evaluate --ckpt OUT``. Optimiser and
loop states are left out. Runs in one process, no process group needed; the format is
``oe.distributed.checkpoint``'s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from oe.distributed.checkpoint import TABLE_KEY, single_device_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oe.export", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint written during training (X.ckpt)")
    parser.add_argument("out", help="where to write the single-device checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        print(f"error: {out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    if out.resolve() == Path(args.checkpoint).resolve():
        print("error: OUT must differ from the checkpoint it is exported from", file=sys.stderr)
        return 2
    try:
        exported = single_device_checkpoint(args.checkpoint)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    torch.save(exported, tmp)
    tmp.replace(out)
    rows = sum(r for s in exported[TABLE_KEY].values() for _, r, _ in s["tables"])
    print(f"wrote {out}: {len(exported['state_dict'])} tensors, {rows:,} n-gram rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())

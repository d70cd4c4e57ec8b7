"""``python -m oe.evaluate``: zero-shot HellaSwag / PIQA / StoryCloze of a checkpoint or GPT-2.

    python -m oe.evaluate --pretrained gpt2 --tasks hellaswag,piqa
    python -m oe.evaluate --ckpt runs/x/checkpoints/last.ckpt --tasks hellaswag --limit 500
    python -m oe.evaluate --pretrained DIR --tasks piqa --data_dir D --output results.json

Items are scored as lm-evaluation-harness does (``oe.evaluation.scoring``), on the full
validation sets unless ``--limit``.
"""

from __future__ import annotations
import argparse
import json
import sys
from pathlib import Path
import torch
from oe.evaluation.tasks import TASKS, load_items

from oe.evaluation.scoring import (evaluate_task, eot_id_of)


# -- model and tokenizer sources ----------------------------------------------------------------

def load_pretrained(source: str, tokenizer_source: str | None = None):
    """(GPT, tokenizer) for an HF GPT-2 checkpoint: hub id or local directory."""
    from oe.models.build import build_model
    from oe.models.pretrained import read_config
    from oe.tokenizer import check_tokenizer_matches, load_tokenizer

    vocab_size = read_config(source)["vocab_size"]
    tokenizer = load_tokenizer(tokenizer_source or source)
    check_tokenizer_matches(tokenizer, vocab_size, f"the checkpoint {source}")
    return build_model(vocab_size=vocab_size, pretrained=source).gpt, tokenizer


def load_checkpoint(path: str, tokenizer_source: str | None = None):
    """(GPT, tokenizer) for a checkpoint of ``oe.cli.fit``; the tokenizer recorded in it unless given."""
    from oe.distributed.checkpoint import TOKENIZER_KEY, load_for_evaluation
    from oe.tokenizer import check_tokenizer_matches, load_tokenizer, tokenizer_fingerprint

    if not Path(path).is_file():
        raise FileNotFoundError(f"--ckpt {path} not found")
    model, record = load_for_evaluation(path)
    record = record or {}
    source = tokenizer_source or record.get("tokenizer_file")
    if source is None:
        raise ValueError(f"{path} records no tokenizer ({TOKENIZER_KEY!r}: its data module keeps "
                         "none, or it predates the record); pass --tokenizer")
    tokenizer = load_tokenizer(source)
    check_tokenizer_matches(tokenizer, model.vocab_size, f"the checkpoint {path}")
    recorded = record.get("tokenizer_fingerprint")
    if recorded is not None and recorded != tokenizer_fingerprint(tokenizer):
        raise ValueError(f"tokenizer {source} is not the one {path} was trained with "
                         f"(fingerprint {tokenizer_fingerprint(tokenizer)} != {recorded})")
    return model, tokenizer


# -- output -----------------------------------------------------------------------------------

def print_results(results: dict[str, dict]) -> None:
    from oe.cli.table import print_table

    rows = [{"task": t, "n": r["n"], "acc": f"{r['acc']:.4f} ± {r['acc_stderr']:.4f}",
             "acc_norm": f"{r['acc_norm']:.4f} ± {r['acc_norm_stderr']:.4f}",
             "items/s": r.get("items_per_s", float("nan"))} for t, r in results.items()]
    print_table(rows, ["task", "n", "acc", "acc_norm", "items/s"])


def log_wandb(results: dict[str, dict], project: str, name: str | None, config: dict) -> None:
    import wandb

    from oe.training.wandb_logger import choose_mode

    run = wandb.init(project=project, name=name, job_type="eval", config=config, mode=choose_mode())
    table = wandb.Table(columns=["task", "n", "acc", "acc_stderr", "acc_norm", "acc_norm_stderr"])
    for task, r in results.items():
        table.add_data(task, r["n"], r["acc"], r["acc_stderr"], r["acc_norm"], r["acc_norm_stderr"])
        run.summary.update({f"{task}/{k}": v for k, v in r.items()})
    run.log({"downstream": table})
    run.finish()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oe.evaluate", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="a checkpoint written by oe.cli.fit")
    source.add_argument("--pretrained", help="GPT-2 in HF format: hub id or local directory")
    parser.add_argument("--tokenizer", help="tokenizer.json, its directory or a hub id "
                                            "(default: the checkpoint's own)")
    parser.add_argument("--tasks", default="hellaswag,piqa,storycloze",
                        help=f"comma-separated, from {', '.join(TASKS)}")
    parser.add_argument("--data_dir", help="read <data_dir>/<task>.jsonl instead of the hub")
    parser.add_argument("--limit", type=int, default=None, help="first N items per task (default: all)")
    parser.add_argument("--batch_size", type=int, default=32, help="sequences per forward pass")
    parser.add_argument("--output", help="write {task: {acc, acc_stderr, acc_norm, acc_norm_stderr, n}}")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--wandb_project", default="oe-eval")
    parser.add_argument("--wandb_name", default=None)
    parser.add_argument("--no_wandb", action="store_true", help="do not log to W&B")
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        parser.error(f"--tasks: unknown {unknown}; choose from {', '.join(TASKS)}")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    if args.batch_size < 1:
        parser.error("--batch_size must be >= 1")
    try:
        if args.ckpt:
            model, tokenizer = load_checkpoint(args.ckpt, args.tokenizer)
        else:
            model, tokenizer = load_pretrained(args.pretrained, args.tokenizer)
        model.to(args.device)
        eot = eot_id_of(tokenizer)
        results = {}
        for task in tasks:
            items = load_items(task, args.data_dir, args.limit)
            results[task] = evaluate_task(model, tokenizer, eot, items, args.batch_size, pad_id=eot)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_results(results)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(
            {t: {k: r[k] for k in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "n")}
             for t, r in results.items()}, indent=2))
        print(f"wrote {args.output}")
    if not args.no_wandb:
        log_wandb(results, args.wandb_project, args.wandb_name,
                  {k: v for k, v in vars(args).items() if k not in ("no_wandb",)})
    return 0


if __name__ == "__main__":
    sys.exit(main())

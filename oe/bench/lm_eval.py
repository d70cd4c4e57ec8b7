"""``oe bench lm_eval``: items/s of ``oe evaluate`` and of lm-eval's ``--model oe``, side by side.

    oe bench lm_eval --checkpoint CKPT_OR_EXPORT --data_dir D --tasks hellaswag,piqa

The same items (``D/<task>.jsonl``, the hub data sets' fields) are scored by
``oe.evaluation.scoring.evaluate_task`` (what ``oe evaluate`` runs) and by
``lm_eval.simple_evaluate`` with the ``oe`` model over the harness's own task configs reading the
same files (``oe.evaluation.lm_eval_model.write_local_tasks``). Both time everything after the
model is loaded: reading the items, tokenising, scoring; lm-eval's time includes its own task
building and request bookkeeping (``lm_eval_oe_scoring_only`` counts the model's scoring alone).
acc and acc_norm are printed beside each other as a check.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from oe.bench.common import peak_rss_mib, write_json
from oe.cli.table import print_table
from oe.evaluation.scoring import eot_id_of, evaluate_task
from oe.evaluation.tasks import load_items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oe bench lm_eval", description=__doc__)
    parser.add_argument("--checkpoint", required=True, help="a .ckpt of oe fit or an exported directory")
    parser.add_argument("--data_dir", required=True, help="holds <task>.jsonl for every task")
    parser.add_argument("--tasks", default="hellaswag,piqa")
    parser.add_argument("--limit", type=int, default=None, help="first N items per task")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import lm_eval
    from lm_eval.tasks import TaskManager

    from oe.evaluation.lm_eval_model import OELM, write_local_tasks

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    harness = OELM(checkpoint=args.checkpoint, batch_size=args.batch_size, device=args.device)
    model, tokenizer = harness.model, harness.tokenizer  # one network for both ways
    eot = eot_id_of(tokenizer)
    scoring = {"seconds": 0.0}  # lm-eval's time inside the model's scoring, apart from its own work
    score = harness._loglikelihood_tokens

    def timed_score(*args, **kwargs):
        started = time.perf_counter()
        try:
            return score(*args, **kwargs)
        finally:
            scoring["seconds"] += time.perf_counter() - started

    harness._loglikelihood_tokens = timed_score
    rows = []
    with tempfile.TemporaryDirectory() as configs:
        write_local_tasks(configs, args.data_dir, tuple(tasks))
        manager = TaskManager(include_path=configs, include_defaults=False)
        for task in tasks:
            started = time.perf_counter()
            items = load_items(task, args.data_dir, args.limit)
            ours = evaluate_task(model, tokenizer, eot, items, args.batch_size, pad_id=eot)
            ours_s = time.perf_counter() - started
            started, scoring["seconds"] = time.perf_counter(), 0.0
            theirs = lm_eval.simple_evaluate(model=harness, tasks=[f"local_{task}"], limit=args.limit,
                                             task_manager=manager, batch_size=args.batch_size)
            theirs_s = time.perf_counter() - started
            metrics = theirs["results"][f"local_{task}"]
            rows.append({"task": task, "items": len(items),
                         "oe_evaluate_items_per_s": len(items) / ours_s,
                         "lm_eval_oe_items_per_s": len(items) / theirs_s,
                         "lm_eval_oe_scoring_only_items_per_s": len(items) / scoring["seconds"],
                         "acc_oe_evaluate": ours["acc"], "acc_lm_eval": metrics["acc,none"],
                         "acc_norm_oe_evaluate": ours["acc_norm"],
                         "acc_norm_lm_eval": metrics["acc_norm,none"]})
    print_table(rows, list(rows[0]))
    write_json("lm_eval", {"rows": rows, "checkpoint": args.checkpoint, "batch_size": args.batch_size,
                           "threads": torch.get_num_threads(), "peak_rss_mib": peak_rss_mib()},
               args.out)
    return 0

"""``oe evaluate``: zero-shot HellaSwag / PIQA / StoryCloze of a checkpoint or GPT-2.

    oe evaluate --ckpt runs/x/checkpoints/last.ckpt
    oe evaluate --pretrained gpt2 --tasks hellaswag,piqa --out results.json
    oe evaluate --pretrained DIR --tasks piqa --data_dir D --limit 500
    oe evaluate --write_examples D    # small task files in the local format, to try it offline

Items are scored as lm-evaluation-harness does (``oe.evaluation.scoring``), on the full
validation sets unless ``--limit``. The default tasks run from the hub as they are (StoryCloze is
``xstorycloze_en``, or the 2016 set when ``--data_dir`` holds it).

Before any work: the output file and the W&B folder are checked (creatable, writable) and every
task's data is loaded; a task whose data cannot be found is named then, and the others still run.
Each task shows a progress bar (items/s, time left); its result is written and logged as soon as
it finishes. At the end: a table, and the tasks not run (exit status 1 if any).

Where results go. A checkpoint inside a run folder (``RUN/checkpoints/X.ckpt``) writes
``RUN/eval/X.json`` (``--out`` elsewhere), where ``oe.report`` reads it, and logs
``downstream/<task>/<metric>`` at the checkpoint's step into the training run's own W&B run (same
id, the keys of ``callbacks.downstream``), or, for a run trained without W&B, into a new run
kept in ``RUN/wandb/``. Other sources log to a new W&B run of ``--wandb_project``;
``--no_wandb`` logs nothing.

Earlier results are never lost: the results file is first written once a task has a result (an
evaluation that fails before, with bad data or a bad checkpoint, leaves it as it was), and the
tasks an earlier evaluation of the same source at the same step wrote there are kept beside the
new ones.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from oe.evaluation.examples import FORMAT, write_example_tasks
from oe.evaluation.tasks import TASKS, TaskDataError, default_tasks, load_items
from oe.cli.flags import Parser
from oe.cli.paths import check_output_dir, check_output_file
from oe.files import write_text_atomically

# torch and the scorer are imported after the command line is parsed: --help answers at once.

METRICS = ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr")


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
    """(GPT, tokenizer) of a checkpoint of ``oe fit`` or a directory of ``oe export --format hf``;
    the tokenizer it records or holds unless given."""
    from oe.huggingface.load import load_model

    return load_model(path, tokenizer_source)


def checkpoint_step(path: str | Path) -> int | None:
    """The global step a checkpoint of ``oe.cli.fit`` was saved at (None if it records none)."""
    import torch

    from oe.distributed.checkpoint import read_checkpoint

    if Path(path).is_dir():  # an exported directory keeps no step
        return None
    checkpoint = read_checkpoint(path, mmap=True)  # memory-mapped: only the small entries are read
    step = checkpoint.get("global_step")
    return None if step is None else int(step)


# -- where results go -----------------------------------------------------------------------------

def run_dir_of(ckpt: str | Path) -> Path | None:
    """The run folder of ``RUN/checkpoints/X.ckpt`` (a folder ``oe.fit`` wrote), else None."""
    folder = Path(ckpt).resolve().parent
    if folder.name != "checkpoints":
        return None
    run = folder.parent
    wrote = [run / "csv", run / "wandb", run / "finished.json"]
    return run if any(p.exists() for p in wrote) else None


@dataclass
class Results:
    """One evaluation's results, rewritten in full after each task (``RUN/eval/X.json``)."""
    source: str
    step: int | None
    tasks: dict[str, dict] = field(default_factory=dict)
    not_run: dict[str, str] = field(default_factory=dict)  # task -> why
    earlier: dict[str, dict] = field(default_factory=dict)  # kept from the file, not rerun

    def payload(self) -> dict:
        not_run = {t: why for t, why in self.not_run.items() if t not in self.earlier}
        return {"source": self.source, "step": self.step, "tasks": {**self.earlier, **self.tasks},
                "not_run": not_run}


def earlier_results(path: Path, source: str, step: int | None) -> dict[str, dict]:
    """The task results an earlier evaluation of ``source`` at ``step`` wrote to ``path``."""
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if (not isinstance(previous, dict) or previous.get("source") != source
            or previous.get("step") != step or not isinstance(previous.get("tasks"), dict)):
        return {}
    return previous["tasks"]


@dataclass
class WandbTarget:
    """The W&B run results go to: the training run's own (``run_id`` set) or a new one."""
    project: str | None
    run_id: str | None = None
    name: str | None = None
    group: str | None = None
    directory: Path | None = None


def training_wandb_run(run_dir: Path) -> WandbTarget | None:
    """The W&B run a training run folder logged to (online or offline): the one its ``wandb_id``
    names (``oe.analysis.runs.run_wandb_files``)."""
    from oe.analysis.runs import read_wandb_info, run_wandb_files

    files = run_wandb_files(run_dir)
    if not files:
        return None
    info = read_wandb_info(files[-1])
    return WandbTarget(info.get("project") or None, info["id"], info.get("name"),
                       info.get("group") or None, run_dir)


def start_wandb(target: WandbTarget, config: dict):
    import wandb

    from oe.training.wandb_logger import choose_mode

    if target.directory is not None:
        check_output_dir(target.directory / "wandb", "the W&B folder")
        (target.directory / "wandb").mkdir(parents=True, exist_ok=True)
    kwargs = dict(project=target.project, name=target.name, group=target.group,
                  mode=choose_mode(), dir=None if target.directory is None else str(target.directory))
    try:
        if target.run_id is not None:  # the training run itself: same id, resumed
            return wandb.init(id=target.run_id, resume="allow", **kwargs)
        return wandb.init(job_type="eval", config=config, **kwargs)
    except Exception as err:  # wandb's own errors (network, permissions) have no common base
        raise ValueError(f"W&B could not start the run ({type(err).__name__}: {err}); "
                         f"pass --no_wandb to evaluate without it") from err


def log_task(run, task: str, result: dict, step: int | None) -> None:
    """``downstream/<task>/<metric>``, the training callback's keys, at the checkpoint's step."""
    row = {f"downstream/{task}/{k}": result[k] for k in METRICS}
    if step is not None:
        row["trainer/global_step"] = step  # the x-axis Lightning's WandbLogger defines
    run.log(row)
    run.summary.update({f"downstream/{task}/n": result["n"]})


# -- output ---------------------------------------------------------------------------------------

def print_results(results: dict[str, dict]) -> None:
    from oe.cli.table import print_table

    rows = [{"task": t, "n": r["n"], "acc": f"{r['acc']:.4f} ± {r['acc_stderr']:.4f}",
             "acc_norm": f"{r['acc_norm']:.4f} ± {r['acc_norm_stderr']:.4f}",
             "items/s": f"{r['items_per_s']:.2f}"} for t, r in results.items()]
    print_table(rows, ["task", "n", "acc", "acc_norm", "items/s"])


def progress_bar(task: str, total: int):
    from tqdm import tqdm

    # Items finish in fractions (their choices are batched by length): show whole items.
    return tqdm(total=total, desc=task, unit="item", dynamic_ncols=True, file=sys.stderr,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total} "
                           "[{elapsed}<{remaining}, {rate_fmt}]")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = Parser(prog="oe evaluate", description=__doc__.split("\n")[0],
                    formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog="local task files (--data_dir D): D/<task>.jsonl, one JSON object a "
                           "line, with the hub data set's field names:\n\n" + FORMAT
                           + "\n\noe evaluate --write_examples D writes small ones; oe lm-eval "
                             "--data_dir D reads the same files.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="a checkpoint written by oe.fit, or a directory "
                                       "of oe export --format hf")
    source.add_argument("--pretrained", help="GPT-2 in HF format: hub id or local directory")
    source.add_argument("--write_examples", metavar="D", type=Path,
                        help="write small example task files (hellaswag, piqa, storycloze) to D "
                             "in the local format, and exit")
    parser.add_argument("--tokenizer", help="tokenizer.json, its directory or a hub id "
                                            "(default: the checkpoint's own)")
    parser.add_argument("--tasks", default=None,
                        help=f"comma-separated, from {', '.join(TASKS)} (default: "
                             f"{','.join(default_tasks())}; storycloze instead of xstorycloze_en "
                             f"when --data_dir holds it)")
    parser.add_argument("--data_dir", help="read <data_dir>/<task>.jsonl instead of the hub")
    parser.add_argument("--limit", type=int, default=None, help="first N items per task (default: all)")
    parser.add_argument("--batch_size", type=int, default=32, help="sequences per forward pass")
    parser.add_argument("--out", "--output", dest="out", type=Path, default=None,
                        help="results JSON, rewritten after each task (default: RUN/eval/X.json "
                             "for a checkpoint RUN/checkpoints/X.ckpt; else none)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--wandb_project", default="oe-eval",
                        help="project of the new W&B run, when the source is not a training run's")
    parser.add_argument("--wandb_name", default=None)
    parser.add_argument("--no_wandb", action="store_true", help="do not log to W&B")
    args = parser.parse_args(argv)
    if args.tasks is None:
        args.tasks = default_tasks(args.data_dir)
    else:
        args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in args.tasks if t not in TASKS]
    if unknown or not args.tasks:
        parser.error(f"--tasks: unknown {unknown}; choose from {', '.join(TASKS)}")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    if args.batch_size < 1:
        parser.error("--batch_size must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.write_examples is not None:
        rows = write_example_tasks(args.write_examples)
        print(f"wrote {', '.join(f'{t}.jsonl' for t in rows)} ({len(rows['piqa'])} items each) to "
              f"{args.write_examples}; try: oe evaluate --ckpt CKPT --data_dir "
              f"{args.write_examples} --tasks {','.join(rows)}")
        return 0
    import torch

    from oe.evaluation.scoring import empty_choices, eot_id_of, evaluate_task

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    run_dir = run_dir_of(args.ckpt) if args.ckpt else None
    out = args.out
    if out is None and run_dir is not None:
        out = run_dir / "eval" / f"{Path(args.ckpt).stem}.json"
    try:
        if out is not None:
            check_output_file(out, "--out", "results.json")
        results = Results(str(args.ckpt or args.pretrained), step=None)
        items = {}
        for task in args.tasks:  # every task's data before the model: missing data shows now
            try:
                items[task] = load_items(task, args.data_dir, args.limit)
            except (FileNotFoundError, TaskDataError) as err:
                results.not_run[task] = str(err)
                print(f"not run: {task}: {err}", file=sys.stderr)
        for task, task_items in items.items():
            for line in empty_choices(task_items):
                print(f"warning: {task}: {line}; scored by the harness's rule (never the "
                      f"acc_norm choice)", file=sys.stderr)
        wandb_run = None
        if not args.no_wandb and items:
            target = training_wandb_run(run_dir) if run_dir is not None else None
            target = target or WandbTarget(args.wandb_project, name=args.wandb_name,
                                            directory=run_dir)
            wandb_run = start_wandb(target, {k: str(v) for k, v in vars(args).items()})
        if items:
            if args.ckpt:  # loaded first: a bad checkpoint is named by its loader
                model, tokenizer = load_checkpoint(args.ckpt, args.tokenizer)
                results.step = checkpoint_step(args.ckpt)
            else:
                model, tokenizer = load_pretrained(args.pretrained, args.tokenizer)
            model.to(args.device)
            eot = eot_id_of(tokenizer)
            if out is not None:
                results.earlier = earlier_results(out, results.source, results.step)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        for task, task_items in items.items():
            with progress_bar(task, len(task_items)) as bar:
                try:
                    result = evaluate_task(model, tokenizer, eot, task_items, args.batch_size,
                                           pad_id=eot, progress=bar.update)
                except TaskDataError as err:
                    results.not_run[task] = str(err)
                    print(f"not run: {task}: {err}", file=sys.stderr)
                    continue
            results.tasks[task] = result
            if out is not None:
                write_text_atomically(out, json.dumps(results.payload(), indent=2))
            if wandb_run is not None:
                log_task(wandb_run, task, result, results.step)
    finally:
        if wandb_run is not None:
            wandb_run.finish()
    if results.tasks:
        print_results(results.tasks)
    if out is not None and results.tasks:
        print(f"wrote {out}")
    if results.not_run:
        print(f"not run ({len(results.not_run)} of {len(args.tasks)} tasks):", file=sys.stderr)
        for task, why in results.not_run.items():
            print(f"  {task}: {why}", file=sys.stderr)
        return 1
    return 0

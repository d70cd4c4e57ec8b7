"""``oe lm-eval``: lm-evaluation-harness's own command line, with the ``oe`` model registered.

What oe adds to lm-eval:
  --model oe            an oe model; --model_args checkpoint=PATH (a .ckpt of oe fit, its
                        export by oe export, or an oe export --format hf directory), and
                        optionally tokenizer=PATH (default: the one the checkpoint records),
                        batch_size, max_batch_size, device, max_gen_toks
  --data_dir D          for the tasks local_hellaswag, local_piqa, local_storycloze and
                        local_xstorycloze_en (the harness's own task configs), read from
                        D/<task>.jsonl: the files oe evaluate --data_dir D reads (its --help
                        gives their format; oe evaluate --write_examples D writes small ones)

examples:
  oe lm-eval --model oe --model_args checkpoint=runs/x/checkpoints/last.ckpt --tasks piqa
  oe lm-eval --model hf --model_args pretrained=OUT,trust_remote_code=True --tasks hellaswag
  oe lm-eval --model oe --model_args checkpoint=OUT --tasks local_piqa --data_dir data/eval

Every other argument is lm-eval's own: oe lm-eval run --help lists them (it imports the harness,
torch and transformers, so it takes longer). lm-eval 0.4.13 reads models from its own registry
only, so this command imports oe.evaluation.lm_eval_model (the oe model) first.
"""

from __future__ import annotations

import sys
import tempfile

# A bare --help: what oe adds, at once (lm-eval's own help imports the harness first).
USAGE = ("usage: oe lm-eval [lm-eval's arguments] [--data_dir D]\n\n"
         + __doc__.split("\n\n", 1)[1])


def main(argv: list[str] | None = None) -> int:
    if list(sys.argv[1:] if argv is None else argv) in (["-h"], ["--help"]):  # before the imports
        print(USAGE, end="")
        return 0
    from oe.evaluation.lm_eval_model import (LOCAL_TASKS, ModelArgsError,  # registers "oe"
                                             write_local_tasks)
    from lm_eval.__main__ import cli_evaluate

    argv = list(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="oe-lm-eval-tasks-") as tasks_dir:
        if "--data_dir" in argv:
            at = argv.index("--data_dir")
            if at + 1 >= len(argv):
                print("error: --data_dir needs a directory", file=sys.stderr)
                return 2
            if "--include_path" in argv:
                print("error: --data_dir writes the task configs of --include_path; give one of "
                      "the two", file=sys.stderr)
                return 2
            data_dir = argv[at + 1]
            del argv[at:at + 2]
            wanted = _local_tasks_named(argv, LOCAL_TASKS)
            if not wanted:
                print(f"error: --data_dir is for the tasks "
                      f"{', '.join('local_' + t for t in LOCAL_TASKS)}; --tasks names none",
                      file=sys.stderr)
                return 2
            try:
                write_local_tasks(tasks_dir, data_dir, wanted)
            except (FileNotFoundError, ValueError) as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
            argv += ["--include_path", tasks_dir]
        sys.argv = ["lm-eval", *argv]
        try:
            cli_evaluate()
        except ModelArgsError as err:  # one line, not lm-eval's traceback
            print(f"error: {err}", file=sys.stderr)
            return 2
    return 0


def _local_tasks_named(argv: list[str], local: dict) -> tuple[str, ...]:
    """The tasks named as local_<task> in ``--tasks``."""
    tasks = argv[argv.index("--tasks") + 1].split(",") if "--tasks" in argv[:-1] else []
    return tuple(t[len("local_"):] for t in tasks if t.startswith("local_") and t[6:] in local)

"""``oe fit --help``: the flags a run is started with, printed without importing the stack.

LightningCLI builds its parser from the model, data and callback classes, so its own help imports
torch and Lightning first (half a minute on a loaded machine). A bare ``oe fit --help`` prints
this page instead; ``oe fit --config CONFIG --help`` is LightningCLI's full help, every field of
that config with its value. ``tests/cli/test_fit_usage.py`` checks that every flag named here is
one of ``oe fit``'s.
"""

from __future__ import annotations

USAGE = """\
usage: oe fit --config CONFIG [--config LAYER ...] [--SECTION.FIELD VALUE ...] [run flags]

Train a model from layered YAML configs (LightningCLI over oe.training.lm.LanguageModel and a
data module). Every field of the config can be changed on the command line, e.g.
--trainer.max_steps 300, --model.over_encoding.modulus 1009, --data.init_args.batch_size 16.

run flags:
  -c, --config FILE     a config (YAML); its 'base:' files apply first; a later --config
                        changes only the fields it names
  --run_dir DIR         the one folder this run writes to: CSV metrics, checkpoints
                        (DIR/checkpoints), the W&B run (offline without a key; its id in
                        DIR/wandb_id), finished.json
  --resume true         resume from DIR's newest complete checkpoint (same W&B run)
  --ckpt_path FILE      resume from this checkpoint
  --run_name NAME       the W&B run's name (default: DIR's folder name)
  --run_group GROUP     the W&B group (a sweep's name)
  --run_project NAME    the W&B project
  --seed_everything N   the seed of model and data
  --print_config        print the resolved config and exit
  --verbose             also show the warnings known to be harmless (oe.cli.console)

callbacks, each a named field (null: none):
  --checkpoint.*        ModelCheckpoint (every_n_train_steps, save_last, ...)
  --ngram_stats.*       n-gram table statistics (rows touched, collisions, norms)
  --generation.*        cfg3f generation accuracy (num_samples, every_n_validations)
  --downstream.*        zero-shot HellaSwag / PIQA / StoryCloze during training

every field of a config with its value and type (imports torch and Lightning, so slower):
  oe fit --config CONFIG --help

examples:
  oe fit --config configs/cfg_baseline.yaml --config configs/presets/quick_cfg.yaml
  oe fit --config configs/cfg_oe3.yaml --run_dir runs/oe3_s1 --seed_everything 1
  oe fit --config configs/cfg_oe3.yaml --run_dir runs/oe3_s1 --seed_everything 1 --resume true

A resume keeps its checkpoint's model, optimiser and schedule: a changed model setting or
schedule length (--trainer.max_steps) is refused. SIGTERM or Ctrl-C stops at the next step
with a checkpoint. Exit status: 0 finished, 1 a checkpoint could not be written, 2 bad input,
128+N stopped by signal N.
"""


def wants_usage(argv: list[str]) -> bool:
    """Whether ``argv`` asks for help and nothing else (``--help`` or ``-h``, ``--verbose``)."""
    rest = [arg for arg in argv if arg != "--verbose"]
    return len(rest) == 1 and rest[0] in ("-h", "--help")

"""``python -m oe.fit --config configs/X.yaml [--section.field value ...]``: train a model.

LightningCLI over ``LanguageModel`` and any LightningDataModule; every field of the config can be
overridden on the command line. Configs are read by ``oe.cli.config`` (layers, ``base:`` lists,
the run's folder). Callbacks are named fields, e.g. ``--generation.num_samples 4``:
``checkpoint`` (ModelCheckpoint), ``ngram_stats`` (NgramTableStats), ``generation``
(GenerationAccuracy, cfg3f) and ``downstream`` (DownstreamEvaluation, Wikitext); a field left
null adds no callback. Each run writes to its ``run_dir``: CSV metrics, checkpoints, the W&B run
(offline without a key) and, only when training finished, ``finished.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import WandbLogger

from callbacks.downstream import DownstreamEvaluation
from callbacks.generation import GenerationAccuracy
from callbacks.ngram_stats import NgramTableStats
from oe.cli.config import ComposedConfigFile, parse_with
from oe.models.embedding import deferred_ngram_tables
from oe.training.lm import LanguageModel
from oe.training.rundir import requeue_resume_path

# Callbacks as named config fields: a layer sets the fields of one and keeps the others.
NAMED_CALLBACKS = {"checkpoint": ModelCheckpoint, "ngram_stats": NgramTableStats,
                   "generation": GenerationAccuracy, "downstream": DownstreamEvaluation}


def run_tags(model: LanguageModel, seed: int | None) -> list[str]:
    tags = [f"kind={model.kind}"]
    tables = model.over_encoding
    if tables is not None:
        tags += [f"n={max(tables.orders)}",
                 f"orders={'+'.join(map(str, [1, *sorted(tables.orders)]))}",
                 f"m={tables.modulus}", f"k={tables.k}"]
    tags.append(f"size={model.model.num_parameters() / 1e6:.1f}M")
    if seed is not None:
        tags.append(f"seed={seed}")
    return tags


class FitCLI(LightningCLI):
    def init_parser(self, **kwargs):
        kwargs.setdefault("dump_header", [f"lightning.pytorch=={L.__version__}"])
        parser = self.parser_class(**kwargs)
        parser.add_argument("-c", "--config", action=ComposedConfigFile,
                            help="a config file (YAML); its 'base' files are applied first")
        return parser

    def parse_arguments(self, parser, args) -> None:
        self.config = parse_with(parser, sys.argv[1:] if args is None else list(args))

    def instantiate_classes(self) -> None:
        # Sharded n-gram tables get their values only when sharded (LanguageModel.configure_model).
        with deferred_ngram_tables():
            super().instantiate_classes()

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.pad_id", "model.pad_id", apply_on="instantiate")
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="checkpoint to resume from")
        parser.add_argument("--run_dir", type=str | None, default=None,
                            help="one folder for all this run writes: default_root_dir, the "
                                 "loggers' save_dir and <run_dir>/checkpoints")
        parser.add_argument("--run_name", type=str | None, default=None,
                            help="W&B run name (default: run_dir's folder name)")
        parser.add_argument("--run_group", type=str | None, default=None,
                            help="W&B group (a sweep's name)")
        parser.add_argument("--run_project", type=str | None, default=None, help="W&B project")
        for key, callback in NAMED_CALLBACKS.items():
            parser.add_argument(f"--{key}", type=callback | None, default=None,
                                help=f"the {callback.__name__} callback; null: none")

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        listed = self.config_init.trainer.get("callbacks") or []
        named = [self.config_init[key] for key in NAMED_CALLBACKS
                 if self.config_init.get(key) is not None]
        listed = listed if isinstance(listed, list) else [listed]
        return super().instantiate_trainer(callbacks=[*listed, *named], **kwargs)

    def before_fit(self) -> None:
        model, data, trainer = self.model, self.datamodule, self.trainer
        longest = getattr(data, "max_sequence_length", None)
        block = model.backbone_config.block_size
        if longest is not None and block < longest:
            raise ValueError(
                f"model.backbone.block_size is {block}, but this data has sequences of up to "
                f"{longest} tokens; set it to at least {longest}"
            )
        seed = self.config.get("seed_everything")
        for logger in trainer.loggers if trainer.is_global_zero else []:
            if isinstance(logger, WandbLogger):
                experiment = logger.experiment
                if hasattr(experiment, "tags"):
                    experiment.tags = tuple(dict.fromkeys([*(experiment.tags or ()),
                                                           *run_tags(model, seed)]))
                    experiment.config.update(self.config.as_dict(), allow_val_change=True)


def _mark_finished(trainer: L.Trainer, started: float) -> None:
    if not trainer.is_global_zero:
        return
    root = Path(trainer.default_root_dir)
    root.mkdir(parents=True, exist_ok=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    summary = {"global_step": trainer.global_step, "seconds": time.time() - started,
               "metrics": metrics, "interrupted": trainer.interrupted}
    if not trainer.interrupted:
        (root / "finished.json").write_text(json.dumps(summary, indent=2))


CLI_KWARGS = dict(model_class=LanguageModel, datamodule_class=L.LightningDataModule,
                  subclass_mode_data=True, save_config_kwargs={"overwrite": True})


def main(args: list[str] | None = None) -> int:
    started = time.time()
    succeeded = False
    try:
        cli = FitCLI(**CLI_KWARGS, args=args, run=False)
        cli.before_fit()
        ckpt_path = cli.config.ckpt_path or requeue_resume_path(
            cli.trainer.default_root_dir,
            [cb.dirpath for cb in cli.trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)])
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
        succeeded = True
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        _finish_wandb(succeeded)
    _mark_finished(cli.trainer, started)
    return 0


def _finish_wandb(succeeded: bool) -> None:
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=0 if succeeded else 1)


if __name__ == "__main__":
    sys.exit(main())

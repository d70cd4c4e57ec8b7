"""``oe fit --config configs/X.yaml [--section.field value ...]``: train a model.

LightningCLI over ``LanguageModel`` and any LightningDataModule; every field of the config can be
overridden on the command line. Configs are read by ``oe.cli.config`` (layers, ``base:`` lists,
the run's folder). Callbacks are named fields, e.g. ``--generation.num_samples 4``:
``checkpoint`` (ModelCheckpoint), ``ngram_stats`` (NgramTableStats), ``generation``
(GenerationAccuracy, cfg3f) and ``downstream`` (DownstreamEvaluation, Wikitext); a field left
null adds no callback. Each run writes to its ``run_dir``: CSV metrics, checkpoints, the W&B run
(offline without a key) and, only when training finished, ``finished.json``.

A folder that already holds a run is refused unless the run resumes it: ``--ckpt_path FILE``, or
``--resume true`` for the folder's newest complete checkpoint (``oe.training.rundir``). SIGTERM and
SIGINT stop at the next step with a checkpoint and exit 128 + the signal (``oe.training.stops``).
Exit status: 0 finished, 1 a checkpoint could not be written, 2 bad input, 128+N stopped by N.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import typing
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.loggers import WandbLogger

from oe.cli.config import CLI_KWARGS, NAMED_CALLBACKS, FitArguments, error_line
from oe.distributed.checkpoint import CheckpointWriteError, checkpoint_problem, read_checkpoint
from oe.distributed.table_state import check_tables
from oe.files import write_text_atomically
from oe.models.embedding import deferred_ngram_tables
from oe.models.config import ModelConfig
from oe.training.checkpoint_io import AtomicCheckpointIO
from oe.training.lm import LanguageModel
from oe.training.precision import check_precision
from oe.training.progress import default_progress_bar
from oe.training.rundir import (RunFolderError, checkpoint_files, keep_wandb_run,
                                launching_process, lock_run_folder, newest_checkpoint,
                                refuse_used_folder, requeue_resume_path)
from oe.training.stops import CleanStop, stop_message


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


class FitCLI(FitArguments):
    """``oe fit``: reads its config as ``FitArguments`` does, then builds and runs it."""

    def instantiate_classes(self) -> None:
        self._lock = None
        try:
            self.ckpt_path = self._resume_path()
            # Sharded n-gram tables get their values only when sharded (configure_model).
            with deferred_ngram_tables():
                super().instantiate_classes()
        except BaseException:
            self.release_run_folder()
            raise

    def release_run_folder(self) -> None:
        """Give up the run folder's lock (it also ends with the process)."""
        if getattr(self, "_lock", None) is not None:
            self._lock.close()
            self._lock = None

    def _checkpoint_dirs(self) -> list[str]:
        root = Path(self.config.trainer.default_root_dir)
        named = self.config.get("checkpoint")
        dirpath = named.init_args.get("dirpath") if named is not None else None
        return list(dict.fromkeys([str(dirpath or root / "checkpoints"), str(root / "checkpoints")]))

    def _resume_path(self) -> str | None:
        """The checkpoint this run resumes from, checked readable, before anything is built.

        The run folder is locked first (by the process that starts the run), and refused when it
        already holds a run that this one does not resume.
        """
        config, root = self.config, self.config.trainer.get("default_root_dir")
        if config.ckpt_path is not None and config.resume:
            raise RunFolderError("give --ckpt_path or --resume, not both")
        if root is None:  # no run folder: nothing to guard; Lightning writes to the working folder
            if config.resume:
                raise RunFolderError("--resume needs the run's folder: give --run_dir")
            return config.ckpt_path or requeue_resume_path(os.getcwd(), [])
        dirs = self._checkpoint_dirs()
        if launching_process():
            self._lock = lock_run_folder(root)
        path = config.ckpt_path
        if config.resume:
            newest = newest_checkpoint(root, dirs)
            if newest is None:
                files = checkpoint_files(root, dirs)
                why = (f" ({checkpoint_problem(files[0]) or f'{files[0]} looks complete'})"
                       if files else "")
                raise RunFolderError(f"--resume: run folder {root} holds no complete checkpoint"
                                     f"{why}; start the run without --resume, or in another "
                                     f"--run_dir")
            path = str(newest)
        path = path or requeue_resume_path(root, dirs)
        if path is None and launching_process():
            refuse_used_folder(root, dirs)
        if path is not None:
            read_checkpoint(path, mmap=True)  # one clear line if it is not a usable file
        keep_wandb_run(config, resuming=path is not None)
        return path

    def check_resume(self) -> None:
        """Refuse a checkpoint whose tables or model settings differ from this run's config.

        A resumed run restores the model, optimiser and schedule state from the checkpoint, so a
        changed model setting (``--model.optimizer.lr``, ...) would be silently dropped.
        """
        if self.ckpt_path is None:
            return
        checkpoint = read_checkpoint(self.ckpt_path, mmap=True)
        check_tables(checkpoint, self.model, self.ckpt_path)
        # A setting added after the checkpoint was written is read as its default: the
        # checkpoint was trained with what the default means.
        saved = _flat(checkpoint.get("hyper_parameters") or {}, "model")
        sections = {key.rpartition(".")[0] for key in saved}
        saved = {**{key: value for key, value in _config_defaults(type(self.model)).items()
                    if key.rpartition(".")[0] in sections}, **saved}
        ours = _flat(dict(self.model.hparams), "model")
        changed = [f"--{key} {ours.get(key)!r} (the checkpoint has {saved.get(key)!r})"
                   for key in sorted(set(saved) | set(ours))
                   if not key.endswith("_instantiator") and saved.get(key) != ours.get(key)]
        if changed:
            raise ValueError(
                f"checkpoint {self.ckpt_path} was written with other model settings: "
                f"{'; '.join(changed)}; a resumed run keeps its checkpoint's model, optimiser "
                f"and schedule, so these cannot apply: drop them, or start a new run in another "
                f"--run_dir"
            )

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        check_precision(self.config_init.trainer.get("precision"),
                        self.config_init.trainer.get("accelerator"))
        listed = self.config_init.trainer.get("callbacks") or []
        named = [self.config_init[key] for key in NAMED_CALLBACKS
                 if self.config_init.get(key) is not None]
        listed = listed if isinstance(listed, list) else [listed]
        self.clean_stop = CleanStop()
        bar = default_progress_bar(self.config_init.trainer.get("enable_progress_bar"), listed)
        trainer = super().instantiate_trainer(
            callbacks=[*listed, *named, self.clean_stop, *([bar] if bar else [])], **kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()  # no half-written last.ckpt
        return trainer

    def before_fit(self) -> None:
        model, data, trainer = self.model, self.datamodule, self.trainer
        self.check_resume()
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
    if not trainer.interrupted:  # whole or not at all: oe report and oe sweep read it
        write_text_atomically(root / "finished.json", json.dumps(summary, indent=2))


def _config_defaults(model_class: type) -> dict[str, Any]:
    """Flat defaults of the config dataclasses the model takes (``model.over_encoding.hash``...):
    its ``ModelConfig``'s and its own (the optimiser)."""
    defaults: dict[str, Any] = {}
    hints = {**typing.get_type_hints(ModelConfig), **typing.get_type_hints(model_class.__init__)}
    for name, hint in hints.items():
        for config_class in typing.get_args(hint) or (hint,):
            if is_dataclass(config_class):
                defaults.update(_flat(config_class(), f"model.{name}"))
    return defaults


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    """Nested hyper-parameters as ``{"model.optimizer.lr": 0.003, ...}`` (dataclasses as mappings)."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flat(item, f"{prefix}.{key}"))
        return flat
    return {prefix: list(value) if isinstance(value, tuple) else value}


def main(args: list[str] | None = None) -> int:
    started = time.time()
    succeeded = False
    cli = None
    try:
        cli = FitCLI(**CLI_KWARGS, args=args, run=False)
        cli.before_fit()
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.ckpt_path)
        succeeded = not cli.trainer.interrupted and cli.clean_stop.stopped is None
    except CheckpointWriteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {error_line(str(err))}", file=sys.stderr)
        return 2
    finally:
        _finish_wandb(succeeded)
        if cli is not None and not succeeded:
            cli.release_run_folder()
    stopped = cli.clean_stop.stopped
    if stopped is not None:
        if cli.trainer.is_global_zero:
            print(stop_message(stopped, "resume with the same command and --resume true (or "
                                        f"--ckpt_path {stopped.checkpoint})"), file=sys.stderr)
        # The process ends now, and a stop must end within seconds: Python's last collection of
        # the run's ~600,000 objects took 10 s and more on a loaded machine.
        gc.freeze()
        return stopped.exit_code
    if cli.trainer.interrupted:
        print("error: training was interrupted; no finished.json written", file=sys.stderr)
        return 1
    _mark_finished(cli.trainer, started)
    cli.release_run_folder()
    return 0


def _finish_wandb(succeeded: bool) -> None:
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=0 if succeeded else 1)

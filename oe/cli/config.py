"""The one config loader: every tool (fit, sweep, plan, mine) reads a config as ``oe fit`` does.

A config is YAML for oe.fit's parser (LightningCLI over ``LanguageModel`` and a data module).
``--config A --config B --section.field value`` layers left to right: a later layer changes only
the fields it names. A file may start with ``base: [x.yaml, y.yaml]`` (paths relative to the
file): its bases are applied first, in order (each after its own bases), then the file itself.
Callbacks are named fields (``checkpoint``, ``ngram_stats``, ``generation``, ``downstream``), not
list items, so a layer changes one without dropping the others. ``run_dir`` is the run's folder:
``trainer.default_root_dir``, every logger's ``save_dir`` and the checkpoint folder derive from it
(``oe.training.rundir.place_run``), and ``--print_config`` shows the result of all of this.
"""

from __future__ import annotations

import importlib
import sys
from argparse import ArgumentError
from pathlib import Path
from typing import NoReturn

import lightning as L
import yaml
from jsonargparse import ActionConfigFile, Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from callbacks.downstream import DownstreamEvaluation
from callbacks.generation import GenerationAccuracy
from callbacks.ngram_stats import NgramTableStats
from oe.cli.flags import program_name
from oe.cli.yaml_files import read_yaml
from oe.models.config import ModelConfig
from oe.training.lm import LanguageModel
from oe.training.rundir import place_run

BASE_KEY = "base"


class ConfigError(ValueError):
    """A config that cannot be read; the message names the file or the field."""


def read_layer(path: Path) -> dict:
    """One config file as a mapping, checked; ``base`` paths made relative to the working folder."""
    content = read_yaml(path, f"--config {path}", ConfigError)
    if content is None:
        raise ConfigError(f"--config {path}: the file is empty; a config is a mapping of sections "
                          f"such as trainer, model and data")
    if not isinstance(content, dict):
        raise ConfigError(f"--config {path}: expected a mapping of sections such as trainer, model "
                          f"and data, got {type(content).__name__}")
    bases = content.get(BASE_KEY, [])
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"--config {path}: '{BASE_KEY}' must be a list of config files "
                          f"(relative to this file), got {bases!r}")
    content[BASE_KEY] = [path.parent / b for b in bases]
    return content


def config_layers(path: str | Path, _within: tuple[Path, ...] = ()) -> list[tuple[Path, dict]]:
    """The layers one ``--config`` file stands for, in the order they apply, bases first."""
    path = Path(path)
    if path.resolve() in _within:
        chain = " -> ".join(str(p) for p in [*_within, path.resolve()])
        raise ConfigError(f"--config {path}: its bases include itself ({chain})")
    content = read_layer(path)
    layers = []
    for base in content.pop(BASE_KEY):
        if not base.is_file():
            raise ConfigError(f"--config {path}: base {base} does not exist (paths in '{BASE_KEY}' "
                              f"are relative to the file that names them)")
        layers += config_layers(base, (*_within, path.resolve()))
    return [*layers, (path, content)]


class ComposedConfigFile(ActionConfigFile):
    """``--config FILE``: applies the file's bases and then the file, each naming itself on error."""

    def __call__(self, parser, cfg, values, option_string=None) -> None:
        try:
            layers = config_layers(values)
        except ConfigError as err:
            raise TypeError(str(err)) from err
        for path, content in layers:
            if not content:
                continue  # a file of bases only
            text = yaml.safe_dump(content, sort_keys=False)
            try:
                self.apply_config(parser, cfg, self.dest, text)
                _check_fields(parser, text)
            except KeyError as err:  # jsonargparse's unknown field: its message is args[0]
                raise TypeError(f"--config {path}: {err.args[0]}") from err
            except (TypeError, ValueError, ArgumentError) as err:
                raise TypeError(f"--config {path}: {err}") from err


def _check_fields(parser, text: str) -> None:
    """Refuse a field the parser lacks while the file that names it is known.

    Values are checked once every layer is in (a layer may leave a field to a later one, such as a
    logger's save_dir to run_dir), so a value of the wrong type is named by its field alone, as is
    a field of a layer that cannot be read without the layers below it.
    """
    exit_on_error, parser.exit_on_error = parser.exit_on_error, False
    try:
        layer = parser.parse_string(text, env=False, defaults=False, _skip_validation=True)
        parser.validate(layer, skip_required=True)
    except KeyError:
        raise
    except (TypeError, ValueError, ArgumentError):
        pass
    finally:
        parser.exit_on_error = exit_on_error


def _take_print_config(args: list[str]) -> tuple[list[str], dict | None]:
    """Remove ``--print_config[=flags]``; its dump options, or None when not asked for."""
    flags, rest = None, []
    for arg in args:
        if arg == "--print_config" or arg.startswith("--print_config="):
            words = [w for w in arg.partition("=")[2].split(",") if w]
            unknown = sorted(set(words) - {"skip_null", "skip_default"})
            if unknown:
                raise ConfigError(f"--print_config: unknown flag(s) {unknown}; "
                                  f"choose from skip_null, skip_default")
            flags = {"skip_unset": "skip_null" in words, "skip_default": "skip_default" in words}
        else:
            rest.append(arg)
    return rest, flags


UNION_FAILURE = "Does not validate against any of the Union subtypes"


def error_line(message: str) -> str:
    """A parser's error as the one line that says what is wrong.

    jsonargparse explains a value that fits no alternative of a ``X | None`` field with a list of
    every alternative's error, the value and its type; the reason is the first alternative's
    (itself perhaps such a list), after the keys that lead to it.
    """
    return _reduce([line.rstrip() for line in str(message).strip().splitlines() if line.strip()])


def _reduce(lines: list[str]) -> str:
    text = [line.strip() for line in lines]
    for index, line in enumerate(text):
        if not line.startswith(UNION_FAILURE):
            continue
        for bullet in range(index + 1, len(lines)):
            if not text[bullet].startswith("- ") or "<class 'NoneType'>" in text[bullet]:
                continue
            depth = len(lines[bullet]) - len(lines[bullet].lstrip())
            block = [text[bullet][2:]]
            for following in lines[bullet + 1:]:
                if len(following) - len(following.lstrip()) <= depth:
                    break
                block.append(following)
            return _joined([*text[:index], _reduce(block)])
        break
    return _joined(text[:5])


def _joined(parts: list[str]) -> str:
    joined = ""
    for part in parts:
        joined = part if not joined else joined + (" " if joined.endswith(":") else "; ") + part
    return joined


class OneLineErrorParser(LightningArgumentParser):
    """oe.fit's parser: an error is one line and exit status 2; usage only on ``--help``."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        sys.stderr.write(f"error: {error_line(message)}\n")
        self.exit(2)


def parse_with(parser, args: list[str]) -> Namespace:
    """Parse ``args`` with oe.fit's ``parser``: layers, then the run's folder, then validation.

    ``--print_config`` prints the composed config (run folder placed) and exits, as in LightningCLI.
    Errors go through ``parser.error``: a message and exit 2, or ArgumentError when the parser
    does not exit on errors.
    """
    try:
        args, print_flags = _take_print_config(list(args))
    except ConfigError as err:
        parser.error(str(err))
    # Validation waits for place_run: a logger's save_dir may come from run_dir alone.
    config = parser.parse_args(args, _skip_validation=True)
    try:
        place_run(config)
    except ValueError as err:
        parser.error(str(err), err)
    if print_flags is not None:
        sys.stdout.write(parser.dump(config, skip_validation=True, **print_flags))
        raise SystemExit(0)
    try:
        parser.validate(config)
    except KeyError as err:
        parser.error(err.args[0], err)
    except (TypeError, ValueError, ArgumentError) as err:
        parser.error(str(err), err)
    try:
        check_model_values(config)
    except ConfigError as err:
        parser.error(str(err), err)
    return config


def check_model_values(config: Namespace) -> None:
    """The model section checked as every model is (``ModelConfig``), when the config is read:
    a bad value fails the parse (and so a sweep's check of its grid) instead of a run that has
    started. The fields linked from the data module (vocabulary, padding id) are not known
    yet; the checks that need them run when the model is built."""
    if config.get("model") is None:
        return
    try:
        ModelConfig.from_section(model_section(config))
    except ValueError as err:
        raise ConfigError(str(err)) from err


# Callbacks as named config fields: a layer sets the fields of one and keeps the others.
NAMED_CALLBACKS = {"checkpoint": ModelCheckpoint, "ngram_stats": NgramTableStats,
                   "generation": GenerationAccuracy, "downstream": DownstreamEvaluation}


class FitArguments(LightningCLI):
    """What ``oe fit`` reads: LightningCLI's parser over ``LanguageModel`` and a data module,
    with layered ``--config`` files, the run's folder and the named callbacks.
    ``oe.cli.fit.FitCLI`` builds and runs what it reads."""

    def init_parser(self, **kwargs):
        kwargs.setdefault("dump_header", [f"lightning.pytorch=={L.__version__}"])
        kwargs.setdefault("prog", program_name())
        parser = self.parser_class(**kwargs)
        parser.add_argument("-c", "--config", action=ComposedConfigFile,
                            help="a config file (YAML); its 'base' files are applied first")
        return parser

    def parse_arguments(self, parser, args) -> None:
        self.config = parse_with(parser, sys.argv[1:] if args is None else list(args))

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.pad_id", "model.pad_id", apply_on="instantiate")
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="checkpoint to resume from")
        parser.add_argument("--resume", type=bool, default=False,
                            help="resume from the run folder's newest complete checkpoint")
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


CLI_KWARGS = dict(model_class=LanguageModel, datamodule_class=L.LightningDataModule,
                  subclass_mode_data=True, save_config_kwargs={"overwrite": True},
                  parser_class=OneLineErrorParser)


class _ParserBuilt(Exception):
    pass


class _ParserOnly(FitArguments):
    def parse_arguments(self, parser, args) -> None:
        raise _ParserBuilt(parser)  # stop before anything is seeded or built


def fit_parser():
    """oe.fit's parser; LightningCLI builds it in its constructor, so one is started and
    stopped as soon as the parser is built."""
    try:
        _ParserOnly(**CLI_KWARGS, args=[], run=False)
    except _ParserBuilt as built:
        return built.args[0]
    raise RuntimeError("FitArguments built no parser")


def parse_fit_config(args: list[str], parser=None) -> Namespace:
    """The config ``oe fit ARGS`` would run, nothing instantiated; ConfigError if it is wrong.

    ``parser``: one from ``fit_parser()`` to reuse over many parses (building one takes seconds).
    """
    parser = parser or fit_parser()
    parser.exit_on_error = False
    try:
        return parse_with(parser, args)
    except ArgumentError as err:
        raise ConfigError(error_line(str(err))) from err


def class_of(spec: Namespace, field: str) -> type:
    """The class a ``class_path`` entry of a parsed config names."""
    module, _, name = str(spec.get("class_path", "")).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(f"{field}.class_path: cannot import {spec.get('class_path')!r}") from err


def instantiate_data(config: Namespace):
    """The config's data module alone (the model is not built)."""
    data = config.data
    return class_of(data, "data")(**data.init_args.as_dict())


def model_section(config: Namespace) -> dict:
    """The ``model`` section as plain values, without the fields oe.fit links from the data."""
    section = config.model.as_dict()
    for linked in ("vocab_size", "pad_id"):
        section.pop(linked, None)
    return section

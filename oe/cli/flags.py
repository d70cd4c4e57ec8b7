"""One flag style for every ``oe`` tool: words joined by underscores, as LightningCLI's
(``--run_dir``, ``--trainer.max_steps``) and most of ours (``--batch_size``, ``--data_dir``).

``Parser`` is ``argparse.ArgumentParser`` that also accepts each multi-word flag spelt with
hyphens (``--runs-dir`` for ``--runs_dir``), the spelling some tools used before, and shows only
the underscore one in ``--help``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def underscored(option: str) -> str:
    return "--" + option[2:].replace("-", "_") if option.startswith("--") else option


class _OneSpelling(argparse.HelpFormatter):
    def _format_action_invocation(self, action: argparse.Action) -> str:
        shown = [o for o in action.option_strings if not o.startswith("--") or "-" not in o[2:]]
        if action.option_strings and not shown:
            shown = action.option_strings[:1]
        if not action.option_strings or shown == action.option_strings:
            return super()._format_action_invocation(action)
        copy = argparse.Action(shown, action.dest, action.nargs, metavar=action.metavar)
        return super()._format_action_invocation(copy)


class _OneSpellingDefaults(_OneSpelling, argparse.ArgumentDefaultsHelpFormatter):
    pass


class _OneSpellingRaw(_OneSpelling, argparse.RawDescriptionHelpFormatter):
    pass


_FORMATTERS = {argparse.HelpFormatter: _OneSpelling,
               argparse.ArgumentDefaultsHelpFormatter: _OneSpellingDefaults,
               argparse.RawDescriptionHelpFormatter: _OneSpellingRaw}


def both_spellings(names: tuple[str, ...], kwargs: dict) -> tuple[str, ...]:
    """Each long option with underscores first, then with hyphens; ``dest`` as argparse would
    choose it from the first long option."""
    if not names or not all(n.startswith("-") for n in names):
        return names  # a positional argument
    if "dest" not in kwargs:
        longs = [n for n in names if n.startswith("--")]
        kwargs["dest"] = (longs or list(names))[0].lstrip("-").replace("-", "_")
    spellings: list[str] = []
    for name in names:
        variants = (underscored(name), "--" + name[2:].replace("_", "-")) if name.startswith("--") else (name,)
        for variant in variants:
            if variant not in spellings:
                spellings.append(variant)
    return tuple(spellings)


class _BothSpellings:
    def add_argument(self, *names, **kwargs):
        return super().add_argument(*both_spellings(names, kwargs), **kwargs)


class _Group(_BothSpellings, argparse._ArgumentGroup):
    pass


class _ExclusiveGroup(_BothSpellings, argparse._MutuallyExclusiveGroup):
    pass


def program_name() -> str | None:
    """``oe SUBCOMMAND`` when run as ``oe SUBCOMMAND ...`` (its sys.argv keeps the subcommand);
    None otherwise, for argparse's own default."""
    if len(sys.argv) > 1 and Path(sys.argv[0]).name == "oe":
        return f"oe {sys.argv[1]}"
    return None


class Parser(_BothSpellings, argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        if not args:
            kwargs.setdefault("prog", program_name())
        formatter = kwargs.get("formatter_class", argparse.HelpFormatter)
        kwargs["formatter_class"] = _FORMATTERS.get(formatter, formatter)
        super().__init__(*args, **kwargs)

    def add_argument_group(self, *args, **kwargs):
        group = _Group(self, *args, **kwargs)
        self._action_groups.append(group)
        return group

    def add_mutually_exclusive_group(self, **kwargs):
        group = _ExclusiveGroup(self, **kwargs)
        self._mutually_exclusive_groups.append(group)
        return group

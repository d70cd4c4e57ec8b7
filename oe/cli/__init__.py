"""The command layer: ``oe SUBCOMMAND ...`` (also ``python -m oe SUBCOMMAND ...``), and
``python -m oe.SUBCOMMAND ...`` for each but ``cfg`` (``oe.cfg`` is the grammar itself).

Only this layer (with the benchmarks and the experiments) may import ``datamodules`` and
``callbacks``; the library below it never does.

Every tool is quiet by default (``oe.cli.console``: known harmless warnings hidden); ``--verbose``
anywhere on its command line shows them. Importing this package changes nothing: the entries
below (``main`` for ``oe``, ``run_module`` for ``python -m oe.X``) take ``--verbose`` off the
command line and quiet the warnings when a tool starts.
"""

from __future__ import annotations

import importlib
import sys

from oe.cli import console
from oe.cli.fit_usage import USAGE as FIT_USAGE, wants_usage

# subcommand -> (module whose main(argv) runs it, one line of help)
SUBCOMMANDS = {
    "fit": ("oe.cli.fit", "train a model from YAML configs (LightningCLI)"),
    "evaluate": ("oe.cli.evaluate", "zero-shot HellaSwag / PIQA / StoryCloze of a checkpoint"),
    "export": ("oe.cli.export", "a single-device checkpoint or a Hugging Face directory from a checkpoint"),
    "lm-eval": ("oe.cli.lm_eval", "lm-evaluation-harness's command line with the oe model registered"),
    "sweep": ("oe.cli.sweep", "expand a sweep file into runs: locally, or as a SLURM job array"),
    "report": ("oe.cli.report", "curves, the log-linear fit and the downstream table of runs (any layout)"),
    "plot": ("oe.cli.plot", "oe report's curves of some runs, in one PNG"),
    "plan": ("oe.cli.plan", "memory per rank of a config's model with sharded tables"),
    "mine": ("oe.cli.mine", "count the most frequent n-grams of a corpus"),
    "bench": ("oe.bench.__main__", "benchmarks: oe bench NAME"),
    "cfg": ("oe.cli.cfg", "sample or check cfg3f sentences"),
    "evidence": ("oe.cli.evidence", "train the cfg3f kinds at equal tokens in a time budget; table, PNG, claims"),
    "generate": ("oe.cli.generate", "continue prompts with a model; n-gram tables on the device or in host memory"),
    "corpus": ("oe.experiments.corpus", "a local English corpus in Wikitext's format (Python's docstrings), offline"),
    "table-scaling": ("oe.experiments.table_scaling", "loss against n-gram table size on a frozen small GPT-2, offline"),
}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: oe SUBCOMMAND [options] [--verbose]   (oe SUBCOMMAND --help for its options)",
             "", "--verbose: also show the warnings known to be harmless (oe.cli.console)", "",
             "subcommands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``oe SUBCOMMAND [options]`` (the ``oe`` command and ``python -m oe``)."""
    argv = console.take_verbose_flag(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    name = name.replace("_", "-") if name.replace("_", "-") in SUBCOMMANDS else name  # oe.lm_eval
    if name not in SUBCOMMANDS:
        print(f"error: unknown subcommand {name!r}; choose one of {', '.join(SUBCOMMANDS)}",
              file=sys.stderr)
        return 2
    # Parsers name themselves ``oe NAME`` from sys.argv (``oe.cli.flags.program_name``).
    return _run(name, rest, [sys.argv[0], name, *rest])


def process(name: str | None = None) -> int:
    """A process's entry: the ``oe`` command and ``python -m oe`` (``name`` None), or ``python -m
    oe.NAME``. It first re-executes the process with tcmalloc where the system has it
    (``oe.cli.allocator``), then runs ``main`` or ``run_module``; those two never re-execute, so
    calling them inside another program (tests) leaves it as it is."""
    from oe.cli import allocator

    allocator.use_fast_allocator()
    return main() if name is None else run_module(name)


def run_module(name: str) -> int:
    """``python -m oe.NAME [options]``: the subcommand ``name`` with this process's arguments."""
    rest = console.take_verbose_flag(sys.argv[1:])
    return _run(name, rest, [sys.argv[0], *rest])


def fit_command(*args: str) -> list[str]:
    """The command that starts a training run in a new process, ``python -m oe.fit ARGS``: the
    one every tool, benchmark and test launches training with."""
    return [sys.executable, "-m", "oe.fit", *args]


def _run(name: str, args: list[str], process_argv: list[str]) -> int:
    """Run tool ``name`` on ``args``; ``process_argv``: this process's command line without
    ``--verbose``, which it becomes (Lightning starts further ranks as ``python PROGRAM
    sys.argv[1:]`` or ``python -m MODULE sys.argv[1:]``: they run the same command)."""
    console.quiet_known_warnings()
    sys.argv = process_argv
    if name == "fit" and wants_usage(args):  # LightningCLI's own help imports the whole stack
        print(FIT_USAGE)
        return 0
    return importlib.import_module(SUBCOMMANDS[name][0]).main(args)

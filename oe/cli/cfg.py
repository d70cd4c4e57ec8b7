"""``oe cfg sample --n N --seed S``, ``oe cfg check [--prefix] [FILE|-]``, ``oe cfg logprob [FILE|-]``.

``check`` prints valid/invalid per line (``--prefix``: the length of the longest prefix that some
cfg3f sentence begins with), ``logprob`` the natural log of the probability that the sampler
emits exactly that line (``-inf`` when the grammar rejects it). Lines are digits 1-3; an empty
line or one with any other character is no sentence (``invalid``, ``0``, ``-inf``).
"""

from __future__ import annotations

import sys

from oe.cli.flags import Parser

# numpy and the grammar's code are imported where they are used: --help answers at once.

_CHUNK = 10_000


def _sample(n: int, seed: int, first: int) -> None:
    import numpy as np

    from oe.cfg.sampler import sample

    for start in range(first, first + n, _CHUNK):
        count = min(_CHUNK, first + n - start)
        symbols, lengths = sample(seed, np.arange(start, start + count))
        digits = symbols + ord("0")
        sys.stdout.write(
            "".join(digits[r, : lengths[r]].tobytes().decode() + "\n" for r in range(count))
        )


def _per_line(lines, score, bad: str, fmt) -> tuple[int, int]:
    """Print ``fmt(score(sentences))`` per line, in chunks (``bad`` for unreadable lines).

    Returns (lines read, lines that scored true): the valid ones, for ``check``.
    """
    from oe.cfg.checker import parse_line

    batch: list = []  # parsed sentences (None: unreadable)
    n_lines = n_true = 0

    def flush() -> None:
        nonlocal n_lines, n_true
        values = iter(score([s for s in batch if s is not None]))
        out = [None if s is None else next(values) for s in batch]
        n_lines += len(out)
        n_true += sum(1 for v in out if v is not None and v)
        sys.stdout.write("".join((bad if v is None else fmt(v)) + "\n" for v in out))
        batch.clear()

    for line in lines:
        batch.append(parse_line(line))
        if len(batch) == _CHUNK:
            flush()
    flush()
    return n_lines, n_true


def _check(lines) -> int:
    from oe.cfg.checker import accepts

    n_lines, n_valid = _per_line(lines, accepts, "invalid", lambda ok: "valid" if ok else "invalid")
    share = n_valid / n_lines if n_lines else 0.0
    print(f"{n_valid}/{n_lines} valid ({share:.2%})", file=sys.stderr)
    return 0


def _logprob(lines) -> int:
    from oe.cfg.inside import logprob

    _per_line(lines, logprob, "-inf", lambda v: f"{v:.10g}")
    return 0


def _prefix(lines) -> int:
    from oe.cfg.inside import viable_prefix_length

    _per_line(lines, viable_prefix_length, "0", str)
    return 0


COMMANDS = {"check": _check, "logprob": _logprob, "prefix": _prefix}


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="oe cfg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_sample = sub.add_parser("sample", help="print N sentences, one per line, as digits 1-3")
    p_sample.add_argument("--n", type=int, required=True)
    p_sample.add_argument("--seed", type=int, default=0)
    p_sample.add_argument("--first", type=int, default=0, help="index of the first sentence")
    p_check = sub.add_parser("check", help="print valid/invalid for each line")
    p_check.add_argument("--prefix", action="store_true",
                         help="print the length of the longest viable prefix instead")
    p_check.add_argument("file", nargs="?", default="-")
    p_logprob = sub.add_parser("logprob", help="print ln P(sentence) for each line")
    p_logprob.add_argument("file", nargs="?", default="-")
    args = parser.parse_args(argv)
    if args.command == "sample":
        if args.n < 0 or args.seed < 0 or args.first < 0:
            parser.error("--n, --seed and --first must be >= 0")
        _sample(args.n, args.seed, args.first)
        return 0
    run = COMMANDS["prefix" if getattr(args, "prefix", False) else args.command]
    if args.file == "-":
        return run(sys.stdin)
    try:
        with open(args.file, encoding="utf-8", errors="replace") as handle:
            return run(handle)
    except (FileNotFoundError, IsADirectoryError) as err:
        what = "is a directory" if isinstance(err, IsADirectoryError) else "no such file"
        print(f"error: {args.file}: {what}", file=sys.stderr)
        return 2

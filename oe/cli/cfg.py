"""``python -m oe.cfg sample --n N --seed S`` and ``python -m oe.cfg check [FILE|-]``."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from oe.cfg.checker import accepts_padded, parse_line
from oe.cfg.grammar import MAX_LENGTH
from oe.cfg.sampler import sample

_CHUNK = 10_000


def _sample(n: int, seed: int, first: int) -> None:
    for start in range(first, first + n, _CHUNK):
        count = min(_CHUNK, first + n - start)
        symbols, lengths = sample(seed, np.arange(start, start + count))
        digits = symbols + ord("0")
        sys.stdout.write(
            "".join(digits[r, : lengths[r]].tobytes().decode() + "\n" for r in range(count))
        )


def _check(lines) -> int:
    n_valid = n_total = 0
    batch: list[np.ndarray | None] = []

    def flush() -> None:
        nonlocal n_valid, n_total
        parsed = [s for s in batch if s is not None and len(s) <= MAX_LENGTH]
        symbols = np.zeros((len(parsed), MAX_LENGTH + 1), dtype=np.int64)
        lengths = np.zeros(len(parsed), dtype=np.int64)
        for r, s in enumerate(parsed):
            symbols[r, : len(s)] = s
            lengths[r] = len(s)
        verdicts = iter(accepts_padded(symbols, lengths))
        out = []
        for s in batch:
            ok = s is not None and len(s) <= MAX_LENGTH and bool(next(verdicts))
            out.append("valid\n" if ok else "invalid\n")
            n_valid += ok
        n_total += len(batch)
        sys.stdout.write("".join(out))
        batch.clear()

    for line in lines:
        batch.append(parse_line(line))
        if len(batch) == _CHUNK:
            flush()
    flush()
    share = n_valid / n_total if n_total else 0.0
    print(f"{n_valid}/{n_total} valid ({share:.2%})", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oe.cfg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_sample = sub.add_parser("sample", help="print N sentences, one per line, as digits 1-3")
    p_sample.add_argument("--n", type=int, required=True)
    p_sample.add_argument("--seed", type=int, default=0)
    p_sample.add_argument("--first", type=int, default=0, help="index of the first sentence")
    p_check = sub.add_parser("check", help="print valid/invalid for each line")
    p_check.add_argument("file", nargs="?", default="-")
    args = parser.parse_args(argv)
    if args.command == "sample":
        if args.n < 0 or args.seed < 0 or args.first < 0:
            parser.error("--n, --seed and --first must be >= 0")
        _sample(args.n, args.seed, args.first)
        return 0
    if args.file == "-":
        return _check(sys.stdin)
    try:
        with open(args.file, encoding="utf-8", errors="replace") as handle:
            return _check(handle)
    except FileNotFoundError:
        print(f"error: no such file: {args.file}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""``oe bench cli``: seconds until ``oe X --help`` answers, for every subcommand, side by side.

Each round starts, in turn, a bare interpreter (``python -c pass``), an interpreter that imports
torch (what a tool that imported its stack before parsing would pay at least) and ``oe X --help``
for every subcommand, each in a fresh process; the table gives each command's median wall time
over the rounds and its ratio to the bare interpreter, so that the figures read the same on a
loaded machine. A command that takes over ``--limit`` seconds (default 3) is flagged.

    oe bench cli --rounds 3
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from oe.cli.flags import Parser

REFERENCES = {"python -c pass": ["-c", "pass"], "python -c 'import torch'": ["-c", "import torch"]}


def wall_time(arguments: list[str]) -> float:
    """Seconds a fresh ``python ARGUMENTS`` takes to exit (output discarded); checks it exits 0."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *arguments], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    from oe.cli import SUBCOMMANDS

    parser = Parser(prog="oe bench cli", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every command (median)")
    parser.add_argument("--limit", type=float, default=3.0, help="seconds a --help may take")
    parser.add_argument("--out", help="JSON file (default bench_results/cli.json)")
    args = parser.parse_args(argv)
    commands = dict(REFERENCES)
    for name in SUBCOMMANDS:
        commands[f"oe {name} --help"] = ["-m", "oe", name, "--help"]
    times: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(args.rounds):
        for label, arguments in commands.items():
            times[label].append(wall_time(arguments))
    bare = statistics.median(times["python -c pass"])
    rows = []
    for label, values in times.items():
        median = statistics.median(values)
        rows.append({"command": label, "median_s": round(median, 3),
                     "x_bare_python": round(median / bare, 1),
                     "over_limit": label.startswith("oe ") and median > args.limit})
    from oe.bench.common import write_json
    from oe.cli.table import print_table

    print_table(rows, ["command", "median_s", "x_bare_python", "over_limit"])
    load = open("/proc/loadavg").read().split()[:3] if sys.platform == "linux" else []
    print(f"load average (1, 5, 15 min): {' '.join(load)}")
    write_json("cli", {"rounds": args.rounds, "limit_s": args.limit, "load_average": load,
                       "rows": rows}, args.out)
    return 1 if any(r["over_limit"] for r in rows) else 0

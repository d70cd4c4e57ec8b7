"""``oe sweep --sweep configs/sweeps/X.yaml [--submit | --local]``: grid sweeps of oe.cli.fit.

A sweep file is plain YAML::

    name: cfg_m                      # W&B group, and the folder runs/<name>/
    base_configs: [configs/cfg_oe3.yaml, configs/presets/quick_cfg.yaml]
    grid:                            # every combination is one run (one point)
      model.over_encoding.modulus: [11, 37, 211]
      seed_everything: [0, 1]
    overrides:                       # optional: the same for every point
      trainer.max_steps: 300

Each point runs ``oe.cli.fit --config <base_configs...> --<key> <value> ... --run_dir
runs/<name>/<point> --run_name <point> --run_group <name>``, where ``<point>`` names the grid values
(``m=37_seed=1``). Without ``--submit``/``--local`` the sbatch commands are printed;
``--submit`` submits one job array (slurm/sweep_array.sbatch); ``--local`` runs the points one after
the other here, skipping those whose folder already holds ``finished.json`` and resuming those
whose folder holds a checkpoint (a point stopped or killed earlier).
Every point's arguments are checked by oe.cli.fit's own parser before anything runs or is submitted.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from oe.cli import fit_command
from oe.cli.flags import Parser
from oe.cli.yaml_files import read_yaml

KEYS = {"name", "base_configs", "grid", "overrides", "description"}
# Short names for the usual sweep axes in point names; others use their last dotted part.
ALIASES = {"modulus": "m", "seed_everything": "seed", "n_embd": "d", "n_layer": "layers"}
ARRAY_TEMPLATE = "slurm/sweep_array.sbatch"
SINGLE_TEMPLATE = "slurm/fit_1node.sbatch"


class SweepError(ValueError):
    """A sweep file or request that cannot run; the message names the file and the field."""


@dataclass
class Point:
    name: str
    values: dict[str, object]
    fit_args: list[str]  # oe.cli.fit's arguments, without the run's folder and names


@dataclass
class Sweep:
    name: str
    base_configs: list[str]
    grid: dict[str, list]
    overrides: dict[str, object] = field(default_factory=dict)
    description: str = ""

    def points(self) -> list[Point]:
        keys = list(self.grid)
        points = []
        for combo in itertools.product(*(self.grid[k] for k in keys)):
            values = dict(zip(keys, combo))
            args = [a for c in self.base_configs for a in ("--config", c)]
            for key, value in {**self.overrides, **values}.items():
                args += [f"--{key}", cli_value(value)]
            points.append(Point(point_name(values), values, args))
        seen: dict[str, Point] = {}
        for p in points:
            if p.name in seen:
                raise SweepError(f"grid values {seen[p.name].values} and {p.values} give the same "
                                 f"run name {p.name!r}; make them differ")
            seen[p.name] = p
        return points


def cli_value(value: object) -> str:
    """One command-line word that jsonargparse reads back as ``value``."""
    if isinstance(value, str):
        return value
    return json.dumps(value)  # numbers, booleans, null, lists and mappings: YAML flow syntax


def point_name(values: dict[str, object]) -> str:
    parts = []
    for key, value in values.items():
        short = ALIASES.get(key.split(".")[-1], key.split(".")[-1])
        text = "+".join(map(str, value)) if isinstance(value, list) else str(value)
        parts.append(f"{short}={re.sub(r'[^A-Za-z0-9.+-]+', '-', text)}")
    return "_".join(parts)


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; raise SweepError naming the file and field on bad input."""
    path = Path(path)
    raw = read_yaml(path, f"sweep file {path}", SweepError)
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: expected a mapping with keys {sorted(KEYS)}")
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise SweepError(f"{path}: unknown key(s) {unknown}; a sweep file has {sorted(KEYS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise SweepError(f"{path}: 'name' must be a folder-safe string (letters, digits, _ . -), "
                         f"got {name!r}")
    configs = raw.get("base_configs")
    if not isinstance(configs, list) or not configs or not all(isinstance(c, str) for c in configs):
        raise SweepError(f"{path}: 'base_configs' must be a non-empty list of config files")
    for c in configs:
        if not Path(c).is_file():
            raise SweepError(f"{path}: base config {c} does not exist (paths are relative to the "
                             f"folder oe.cli.sweep runs in, the repository root)")
    grid = raw.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise SweepError(f"{path}: 'grid' is empty; give at least one key with a list of values, "
                         f"e.g. grid: {{model.over_encoding.modulus: [11, 37]}}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{path}: grid key {key!r} must map to a non-empty list of values, "
                             f"got {values!r}")
    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise SweepError(f"{path}: 'overrides' must be a mapping of dotted keys to values")
    both = sorted(set(grid) & set(overrides))
    if both:
        raise SweepError(f"{path}: key(s) {both} are in both 'grid' and 'overrides'")
    for key in [*grid, *overrides]:
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", key):
            raise SweepError(f"{path}: {key!r} is not a dotted config key like trainer.max_steps")
    return Sweep(name, configs, grid, overrides, str(raw.get("description") or ""))


def check_point(point: Point, parser=None) -> None:
    """Parse the point's arguments as oe.cli.fit would (nothing is built); SweepError if wrong.

    ``parser``: oe.cli.config.fit_parser()'s, to reuse over the points."""
    from oe.cli.config import ConfigError, parse_fit_config  # heavy: torch, Lightning

    try:
        parse_fit_config(point.fit_args, parser)
    except ConfigError as err:
        raise SweepError(f"point {point.name}: oe.cli.fit rejects its arguments: {err}") from err


def run_args(sweep: Sweep, point: Point, runs_dir: Path) -> tuple[Path, list[str]]:
    run_dir = runs_dir / sweep.name / point.name
    return run_dir, [*point.fit_args, "--run_dir", str(run_dir), "--run_name", point.name,
                     "--run_group", sweep.name]


def write_points_file(sweep: Sweep, points: list[Point], runs_dir: Path) -> Path:
    """``runs/<name>/points.txt``: line i+1 is array task i's RUN_DIR and oe.cli.fit arguments."""
    folder = runs_dir / sweep.name
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for p in points:
        run_dir, args = run_args(sweep, p, runs_dir)
        lines.append(shlex.join([str(run_dir), *args]))
    out = folder / "points.txt"
    out.write_text("\n".join(lines) + "\n")
    (folder / "points.json").write_text(json.dumps(
        [{"index": i, "name": p.name, "values": p.values, "run_dir": str(folder / p.name)}
         for i, p in enumerate(points)], indent=2))
    return out


def array_command(sweep: Sweep, n_points: int, points_file: Path, runs_dir: Path,
                  sbatch_args: list[str], max_parallel: int | None,
                  template: str = ARRAY_TEMPLATE) -> list[str]:
    array = f"0-{n_points - 1}" + (f"%{max_parallel}" if max_parallel else "")
    log = runs_dir / sweep.name / "slurm" / "%A_%a.out"
    return ["sbatch", "--parsable", f"--array={array}", f"--job-name={sweep.name}",
            f"--output={log}", *sbatch_args, template, str(points_file)]


def run_local(sweep: Sweep, points: list[Point], runs_dir: Path) -> int:
    from oe.training.rundir import newest_checkpoint  # heavy: torch

    failed = []
    for i, point in enumerate(points):
        run_dir, args = run_args(sweep, point, runs_dir)
        if (run_dir / "finished.json").exists():
            print(f"[{i + 1}/{len(points)}] {point.name}: already finished, skipped", flush=True)
            continue
        if newest_checkpoint(run_dir, [str(run_dir / "checkpoints")]) is not None:
            args = [*args, "--resume", "true"]  # a point stopped or killed earlier goes on
            print(f"[{i + 1}/{len(points)}] {point.name} -> {run_dir} (resumed)", flush=True)
        else:
            print(f"[{i + 1}/{len(points)}] {point.name} -> {run_dir}", flush=True)
        if subprocess.run(fit_command(*args)).returncode != 0:
            failed.append(point.name)
    if failed:
        print(f"error: {len(failed)} point(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", required=True, help="sweep YAML file")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--submit", action="store_true", help="submit one SLURM job array")
    mode.add_argument("--local", action="store_true", help="run the points here, in order")
    parser.add_argument("--runs_dir", default="runs", type=Path,
                        help="runs go to RUNS_DIR/<sweep name>/<point> (default: runs)")
    parser.add_argument("--sbatch_arg", action="append", default=[], metavar="ARG",
                        help="extra sbatch option, e.g. --sbatch_arg=--partition=gpu (repeatable)")
    parser.add_argument("--max_parallel", type=int, default=None,
                        help="at most this many array tasks at once")
    parser.add_argument("--no_check", action="store_true",
                        help="skip parsing each point with oe.cli.fit's parser first")
    args = parser.parse_args(argv)
    try:
        sweep = load_sweep(args.sweep)
        points = sweep.points()
        if args.submit and shutil.which("sbatch") is None:
            raise SweepError("--submit needs SLURM's `sbatch` on PATH, and it is not there; "
                             "run the points here with --local instead")
        if not args.no_check:
            from oe.cli.config import fit_parser

            fit_args_parser = fit_parser()
            for point in points:
                check_point(point, fit_args_parser)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"sweep {sweep.name}: {len(points)} point(s), W&B group {sweep.name!r}", flush=True)
    if args.local:
        return run_local(sweep, points, args.runs_dir)
    if args.submit:
        points_file = write_points_file(sweep, points, args.runs_dir)
        (args.runs_dir / sweep.name / "slurm").mkdir(parents=True, exist_ok=True)
        cmd = array_command(sweep, len(points), points_file, args.runs_dir, args.sbatch_arg,
                            args.max_parallel)
        print(shlex.join(cmd), flush=True)
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"error: sbatch failed: {result.stderr.strip()}", file=sys.stderr)
            return 1
        job = result.stdout.strip().split(";")[0]
        print(f"submitted array job {job}: task i runs line i+1 of {points_file}")
        for i, p in enumerate(points):
            print(f"  {job}_{i}: {args.runs_dir / sweep.name / p.name}")
        return 0
    for point in points:
        run_dir = args.runs_dir / sweep.name / point.name  # launch.sh names the run after it
        print(shlex.join(["sbatch", *args.sbatch_arg, SINGLE_TEMPLATE, str(run_dir),
                          *point.fit_args, "--run_group", sweep.name]))
    return 0

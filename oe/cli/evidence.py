"""``oe evidence cfg3f --minutes M --kinds baseline,oe2,oe3,od3,ot3 --seeds 0,1,2``.

Trains the cfg3f kinds one after another on this device, each seed of each kind for the same
number of steps (so the same sentences and tokens per seed), sized to fit M minutes of wall clock:
a short calibration of the most expensive kind times a step, a validation and the start-up, and
the steps per run follow (``oe.analysis.evidence.steps_in_budget``); a budget too small for a meaningful
run is refused before anything trains. Each run is ``oe fit --config
configs/cfg_<kind>.yaml --config <presets> ...`` in a subprocess, with a cosine schedule over
exactly its steps, validation on the same sentences at fixed step intervals and generation at
each validation. A run folder with ``finished.json`` is not run again, and the steps chosen are
kept in ``<runs_dir>/sizing.json``, so an interrupted set resumes with the same steps.

Writes into ``--out``: each run's ``metrics.csv`` (as ``<kind>_s<seed>.csv``), ``evidence.png``
(excess loss on a log axis, generation accuracy and viable prefix against tokens, a band over the
seeds) and ``evidence.md`` (set-up, budget as a share of the paper's, the table, the claims).
"""

from __future__ import annotations

import json
import platform
import shlex
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from oe.analysis.evidence import (Calibration, EvidenceError, Spread, TABLE_METRICS, TOKENS,
                                  final_spreads, steps_in_budget, plot_evidence, render_markdown,
                                  schedule_end, warmup_for)
from oe.analysis.plot import read_csv_history
from oe.cli.flags import Parser
from oe.cli.fit_runs import CSV_ONLY, device_name, run_fit
from oe.files import write_atomically

EXPERIMENTS = {"cfg3f": "configs/cfg_{kind}.yaml"}
COST_ORDER = ["ot3", "od3", "oe3", "oe2", "baseline"]  # most expensive first: extra heads, tables


def fit_args(config: str, presets: list[str], seed: int, run_dir: Path, steps: int,
             validations: int, warmup: int, batch_size: int, gen_samples: int | None,
             gen_every: int = 1) -> list[str]:
    """oe.fit's arguments for one run: ``steps`` steps over exactly ``steps`` batches of data."""
    args = ["--config", config]
    for preset in presets:
        args += ["--config", preset]
    args += ["--seed_everything", str(seed), "--data.init_args.seed", str(seed),
             "--run_dir", str(run_dir),
             "--trainer.max_steps", str(steps), "--trainer.max_time", "null",
             "--trainer.val_check_interval", str(steps // validations),
             "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
             "--trainer.logger", CSV_ONLY,
             # one epoch of exactly `steps` batches: the schedule's length is the run's length
             "--data.init_args.train_sentences", str(steps * batch_size),
             "--data.init_args.epochs", "1",
             "--model.optimizer.warmup_steps", str(warmup),
             "--generation.every_n_validations", str(gen_every)]
    if gen_samples is not None:
        args += ["--generation.num_samples", str(gen_samples),
                 "--generation.batch_size", str(gen_samples)]
    return args


def composed(config: str, presets: list[str]) -> tuple[int, int]:
    """(batch size, warm-up steps) of a config with the presets layered over it."""
    from oe.cli.config import parse_fit_config

    args = ["--config", config] + [a for p in presets for a in ("--config", p)]
    parsed = parse_fit_config(args)
    return int(parsed.data.init_args.batch_size), int(parsed.model.optimizer.warmup_steps)


PRESETS_DIR = Path("configs/presets")


def preset_path(preset: str) -> str:
    """A preset given by name (``laptop``: configs/presets/laptop_cfg.yaml) or as a file."""
    if preset.endswith(".yaml"):
        return preset
    path = PRESETS_DIR / f"{preset}_cfg.yaml"
    if not path.is_file():
        names = sorted(p.name.removesuffix("_cfg.yaml") for p in PRESETS_DIR.glob("*_cfg.yaml"))
        raise EvidenceError(f"--preset {preset}: no {path}; preset names: {', '.join(names)}, "
                            f"or a .yaml file")
    return str(path)


def preset_schedule(config: str, presets: list[str]) -> tuple[int, int, int]:
    """(steps, validations, every_n_validations of generation) the presets set, for a set of runs
    sized by its presets rather than by --minutes."""
    from oe.cli.config import parse_fit_config

    args = ["--config", config] + [a for p in presets for a in ("--config", p)]
    parsed = parse_fit_config(args)
    steps, interval = parsed.trainer.max_steps, parsed.trainer.val_check_interval
    if not isinstance(steps, int) or steps < 1 or not isinstance(interval, int) or interval < 1:
        raise EvidenceError(f"without --minutes the presets must set trainer.max_steps and an "
                            f"integer trainer.val_check_interval (they give {steps} and "
                            f"{interval}); give --minutes or such a preset (--preset laptop)")
    return steps, steps // interval, int(parsed.generation.init_args.every_n_validations)


def calibrate(config: str, presets: list[str], run_dir: Path, steps: int, batch_size: int,
              gen_samples: int | None) -> Calibration:
    """Time ``steps`` steps and one validation of ``config``; start-up is the rest of the wall time."""
    shutil.rmtree(run_dir, ignore_errors=True)
    wall = run_fit(fit_args(config, presets, 0, run_dir, steps, 1, 1, batch_size, gen_samples),
                   run_dir / "fit.log")
    history = read_csv_history(run_dir / "csv")
    rates = [v for _, v in history.get("train/tokens_per_s", [])]
    tokens = history.get(TOKENS, [])
    if len(rates) < 2 or not tokens:
        raise EvidenceError(f"calibration in {run_dir} logged too few steps to time")
    seconds_per_step = (tokens[-1][1] / len(tokens)) / float(np.median(rates))
    generation = history.get("val/gen_seconds", [(0, 0.0)])[-1][1]
    # Later samples are longer (a trained model ends its sentences, an untrained one rambles to
    # the length limit unevenly): count a validation as half as long again as the one measured.
    validation = 1.5 * generation
    startup = max(0.0, wall - steps * seconds_per_step - generation)
    return Calibration(seconds_per_step, startup, validation)


def load_or_make_sizing(path: Path, request: dict, make) -> dict:
    """The sizing saved for this set of runs, or a new one; a different request is an error.

    Runs sized by the presets (no ``--minutes``) take the same steps however many kinds and seeds
    the set has, so a set can grow by kinds or seeds and keep the runs it made."""
    if path.exists():
        sizing = json.loads(path.read_text())
        saved = sizing["request"]
        growable = ("kinds", "seeds") if request["minutes"] is None else ()
        if ({k: v for k, v in saved.items() if k not in growable}
                != {k: v for k, v in request.items() if k not in growable}):
            raise EvidenceError(f"{path} was sized for {saved}, not {request}; use "
                                f"another --runs_dir or delete it")
        if saved != request:
            sizing["request"] = request
            write_atomically(path, lambda file: file.write_text(json.dumps(sizing, indent=2)))
        return sizing
    sizing = {"request": request, **make()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sizing, indent=2))
    return sizing


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["wikitext"]:  # its own study and flags: oe.cli.evidence_wikitext
        from oe.cli.evidence_wikitext import main as wikitext

        return wikitext(given[1:])
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=sorted(EXPERIMENTS))
    parser.add_argument("--minutes", type=float, default=None,
                        help="wall-clock budget of the whole set, calibration included; without "
                             "it, the presets' trainer.max_steps and validation interval")
    parser.add_argument("--kinds", default="baseline,oe2,oe3,od3,ot3",
                        help="kind names (configs/cfg_<kind>.yaml) or config files (*.yaml)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--preset", action="append", default=[], metavar="YAML|NAME",
                        help="config layered over each kind's config (repeatable, in order); a "
                             "name such as laptop is configs/presets/<name>_cfg.yaml")
    parser.add_argument("--parallel", type=int, default=1,
                        help="runs trained at once, one CPU thread each when above 1 "
                             "(default: 1, one after another)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: docs/evidence/<experiment>_<cpu|gpu>)")
    parser.add_argument("--runs_dir", type=Path, default=None,
                        help="where the runs train (default: runs/evidence/<out folder's name>)")
    parser.add_argument("--validations", type=int, default=None,
                        help="validations per run, evenly spaced, the last at the final step "
                             "(default: 4 with --minutes, else the presets' interval)")
    parser.add_argument("--gen_samples", type=int, default=None,
                        help="generated samples per validation (default: the presets')")
    parser.add_argument("--gen_every", type=int, default=None,
                        help="generate at the 1st validation and every this-many-th after it; "
                             "(validations - 1) must be a multiple, so the last one generates "
                             "(default: 1 with --minutes, else the presets' "
                             "generation.every_n_validations)")
    parser.add_argument("--reference", default=None, metavar="KIND",
                        help="judge every other kind against this one (a name from --kinds; a "
                             "config file by its stem) in evidence.md")
    parser.add_argument("--calibration_steps", type=int, default=10)
    parser.add_argument("--margin", type=float, default=0.85,
                        help="share of each run's time after fixed costs given to training")
    parser.add_argument("--min_steps", type=int, default=20,
                        help="refuse a budget that gives fewer steps per run")
    args = parser.parse_args(argv)
    args.command = "oe evidence " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        # A kind is a name (configs/cfg_<kind>.yaml) or a config file, named by its stem.
        configs = {Path(k).stem if k.endswith(".yaml") else k:
                   k if k.endswith(".yaml") else EXPERIMENTS[args.experiment].format(kind=k)
                   for k in kinds}
        kinds = list(configs)
        if args.reference is not None and args.reference not in kinds:
            raise EvidenceError(f"--reference {args.reference} is not one of the kinds "
                                f"({', '.join(kinds)})")
        args.preset_names = [p for p in args.preset if not p.endswith(".yaml")]
        args.preset = [preset_path(p) for p in args.preset]
        for path in [*configs.values(), *args.preset]:
            if not Path(path).is_file():
                raise EvidenceError(f"no such config: {path}")
        args.preset_steps = None
        if args.minutes is None:  # sized by the presets
            steps, validations, gen_every = preset_schedule(next(iter(configs.values())),
                                                            args.preset)
            args.preset_steps = steps
            args.validations = args.validations or validations
            args.gen_every = args.gen_every or gen_every
        args.validations = args.validations or 4
        args.gen_every = args.gen_every or 1
        if (not kinds or not seeds or args.validations < 1 or args.calibration_steps < 3
                or args.parallel < 1):
            raise EvidenceError("--kinds and --seeds need one entry or more, --validations >= 1, "
                                "--calibration_steps >= 3, --parallel >= 1")
        if args.gen_every < 1 or (args.validations - 1) % args.gen_every:
            raise EvidenceError(f"--gen_every {args.gen_every} must divide --validations - 1 "
                                f"({args.validations - 1}): generation runs at the 1st validation "
                                f"and every {args.gen_every}th after it, and must reach the last")
        return run(args, kinds, seeds, configs)
    except EvidenceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def run(args, kinds: list[str], seeds: list[int], configs: dict[str, str]) -> int:
    started = time.time()
    budget = 60 * args.minutes if args.minutes is not None else None
    device = device_name()
    if args.parallel > 1 and device.startswith("CPU"):
        device = (f"CPU ({platform.processor() or platform.machine()}, {args.parallel} runs at "
                  f"once, 1 thread each)")
    # a named preset names the default folder (--preset laptop: docs/evidence/cfg3f_laptop)
    suffix = (args.preset_names[-1] if args.preset_names
              else 'gpu' if 'GPU' in device else 'cpu')
    out = args.out or Path("docs/evidence") / f"{args.experiment}_{suffix}"
    runs_dir = args.runs_dir or Path("runs/evidence") / out.name
    batch_sizes = {composed(configs[k], args.preset)[0] for k in kinds}
    if len(batch_sizes) != 1:
        raise EvidenceError(f"the kinds' configs differ in data.init_args.batch_size "
                            f"({sorted(batch_sizes)}): equal steps would not be equal tokens")
    batch_size = batch_sizes.pop()
    costliest = next((k for k in COST_ORDER if k in kinds), kinds[0])
    request = {"experiment": args.experiment, "kinds": kinds, "seeds": seeds,
               "presets": args.preset, "minutes": args.minutes, "validations": args.validations,
               "gen_samples": args.gen_samples, "gen_every": args.gen_every}

    def make_sizing() -> dict:
        if budget is None:
            print(f"{args.preset_steps} steps per run, as the presets set", flush=True)
            return {"steps": args.preset_steps, "calibration": None}
        print(f"calibrating on {costliest}: {args.calibration_steps} steps and one validation",
              flush=True)
        calibration = calibrate(configs[costliest], args.preset, runs_dir / "calibration",
                                args.calibration_steps, batch_size, args.gen_samples)
        left = budget - (time.time() - started)
        steps = steps_in_budget(left, len(kinds) * len(seeds), args.validations, calibration,
                           args.margin, args.min_steps,
                           (args.validations - 1) // args.gen_every + 1)
        print(f"calibration: {calibration.seconds_per_step:.2f} s/step, start-up "
              f"{calibration.startup_seconds:.0f} s, validation ~{calibration.validation_seconds:.0f}"
              f" s; {steps} steps per run", flush=True)
        return {"steps": steps, "calibration": vars(calibration)}

    sizing = load_or_make_sizing(runs_dir / "sizing.json", request, make_sizing)
    steps = sizing["steps"]
    total = len(kinds) * len(seeds)
    threads = 1 if args.parallel > 1 else None

    def train(index: int, kind: str, seed: int) -> None:
        run_dir = runs_dir / f"{kind}_s{seed}"
        if (run_dir / "finished.json").exists():
            print(f"[{index}/{total}] {kind} seed {seed}: finished before, kept", flush=True)
            return
        shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished run starts again from step 0
        warmup = warmup_for(steps, composed(configs[kind], args.preset)[1])
        seconds = run_fit(fit_args(configs[kind], args.preset, seed, run_dir, steps,
                                   args.validations, warmup, batch_size, args.gen_samples,
                                   args.gen_every),
                          run_dir / "fit.log", threads)
        left = ("" if budget is None
                else f", {(budget - (time.time() - started)) / 60:.1f} min of the budget left")
        print(f"[{index}/{total}] {kind} seed {seed}: {steps} steps in {seconds:.0f} s{left}",
              flush=True)

    jobs = [(i, k, s) for i, (k, s) in enumerate(((k, s) for k in kinds for s in seeds), start=1)]
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        for done in [pool.submit(train, *job) for job in jobs]:
            done.result()  # the first failure stops the set (runs under way finish first)
    write_outputs(args, kinds, seeds, runs_dir, out, steps, device)
    print(f"wrote {out / 'evidence.md'}, {out / 'evidence.png'} and the runs' CSVs", flush=True)
    return 0


def write_outputs(args, kinds: list[str], seeds: list[int], runs_dir: Path, out: Path, steps: int,
                  device: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    histories = {}
    for kind in kinds:
        histories[kind] = []
        for seed in seeds:
            csvs = sorted((runs_dir / f"{kind}_s{seed}" / "csv").glob("version_*/metrics.csv"))
            if not csvs:
                raise EvidenceError(f"{runs_dir / f'{kind}_s{seed}'}: no metrics.csv")
            shutil.copyfile(csvs[-1], out / f"{kind}_s{seed}.csv")
            histories[kind].append(read_csv_history(runs_dir / f"{kind}_s{seed}" / "csv"))
    tokens_per_run = {k: Spread.of([h[TOKENS][-1][1] for h in runs]) for k, runs in histories.items()}
    compared, finals = final_spreads(histories, TABLE_METRICS)
    plot_evidence(histories, out / "evidence.png")
    (out / "evidence.md").write_text(render_markdown(
        command=args.command, device=device, steps=steps, tokens_per_run=tokens_per_run,
        compared_tokens=compared, minutes=args.minutes, seeds=seeds, finals=finals,
        png_name="evidence.png",
        schedule_ends=Spread.of([schedule_end(h) for runs in histories.values() for h in runs]),
        reference=args.reference, parallel=args.parallel))

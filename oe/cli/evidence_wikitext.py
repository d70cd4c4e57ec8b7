"""``oe evidence wikitext --arms baseline,oe3_mean,oe3_sum --seeds 0,1,2``: Over-Encoding's
recipes on local real text at equal tokens (``oe.analysis.wikitext_study``).

Each arm of ``oe.analysis.wikitext_study.ARMS`` is ``oe fit --config <its config>
--config configs/presets/wikitext_quick.yaml <its overrides>`` in a subprocess, one after another,
one thread each, seeds in the order given (the arms of seed 0 first, so the first results compare
every arm). A run folder with ``finished.json`` is kept; an unfinished one starts again. Then,
over every finished run under ``--runs_dir`` (so several calls build one study), it writes into
``--out``: each run's ``metrics.csv`` (``<arm>_s<seed>.csv``), ``wikitext_curves.png``,
``evidence.md`` (the arms at equal tokens, verdicts on the seed ranges, the gap to the baseline
against tokens, the m-law) and, through ``oe report``, the m-law's ``mlaw_<recipe>/`` (fit with its
95% interval, ``loglinear.png``). ``--report_only`` skips training.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

from oe.analysis.evidence import EvidenceError
from oe.analysis.plot import read_csv_history
from oe.analysis.wikitext_study import (ARMS, CORPUS, LAW_RECIPES, METRIC, PRESET, QUICK_MODULUS,
                                        arm_finals, catch_up, law_arms, law_section, paired_differences,
                                        plot_study, render_study)
from oe.cli.flags import Parser
from oe.cli.fit_runs import CSV_ONLY, device_name, run_fit


def fit_args(arm: str, seed: int, run_dir: Path, validate_every: int, preset: str) -> list[str]:
    spec = ARMS[arm]
    return ["--config", spec.config, "--config", preset, *spec.overrides,
            "--seed_everything", str(seed), "--data.init_args.seed", str(seed),
            "--run_dir", str(run_dir), "--trainer.logger", CSV_ONLY,
            "--trainer.enable_progress_bar", "false",
            "--trainer.val_check_interval", str(validate_every),
            "--data.init_args.num_workers", "0"]


def finished_runs(runs_dir: Path) -> dict[str, list[tuple[int, Path]]]:
    """Each arm's finished runs under ``runs_dir``: (seed, folder), by seed."""
    found: dict[str, list[tuple[int, Path]]] = {}
    for marker in sorted(runs_dir.glob("*_s*/finished.json")):
        arm, _, seed = marker.parent.name.rpartition("_s")
        if arm in ARMS and seed.isdigit():
            found.setdefault(arm, []).append((int(seed), marker.parent))
    return {arm: sorted(runs) for arm, runs in found.items()}


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="oe evidence wikitext", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", default="baseline,oe3_mean,oe3_sum",
                        help=f"comma-separated arms, run in this order per seed: {', '.join(ARMS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--preset", default=PRESET)
    parser.add_argument("--out", type=Path, default=Path("docs/evidence/wikitext_laptop"))
    parser.add_argument("--runs_dir", type=Path, default=Path("runs/evidence/wikitext_laptop"))
    parser.add_argument("--validate_every", type=int, default=50,
                        help="steps between validations (the curves' points)")
    parser.add_argument("--report_only", action="store_true",
                        help="train nothing; write the outputs from the finished runs")
    args = parser.parse_args(argv)
    command = "oe evidence wikitext " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        arms = [a.strip() for a in args.arms.split(",") if a.strip()]
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        unknown = [a for a in arms if a not in ARMS]
        if unknown:
            raise EvidenceError(f"--arms: no arm {', '.join(unknown)}; the arms: {', '.join(ARMS)}")
        if not arms or not seeds or args.validate_every < 1:
            raise EvidenceError("--arms and --seeds need one entry or more, --validate_every >= 1")
        if not Path(args.preset).is_file():
            raise EvidenceError(f"--preset: no such config: {args.preset}")
        if not args.report_only:
            train(arms, seeds, args)
        write_outputs(args.runs_dir, args.out, command)
        return 0
    except EvidenceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def train(arms: list[str], seeds: list[int], args) -> None:
    if args.preset == PRESET:
        missing = [f for f in ("train.txt", "validation.txt") if not (Path(CORPUS) / f).is_file()]
        if missing:
            raise EvidenceError(f"the preset reads {CORPUS}/train.txt and validation.txt; write "
                                f"them first: oe corpus --out {CORPUS}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per run, inherited by oe.fit
    order = [(arm, seed) for seed in seeds for arm in arms]
    for index, (arm, seed) in enumerate(order, start=1):
        run_dir = args.runs_dir / f"{arm}_s{seed}"
        if (run_dir / "finished.json").exists():
            print(f"[{index}/{len(order)}] {arm} seed {seed}: finished before, kept", flush=True)
            continue
        shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished run starts again from step 0
        seconds = run_fit(fit_args(arm, seed, run_dir, args.validate_every, args.preset),
                          args.runs_dir / "logs" / f"{arm}_s{seed}.log")
        print(f"[{index}/{len(order)}] {arm} seed {seed}: {seconds:.0f} s", flush=True)


def write_outputs(runs_dir: Path, out: Path, command: str) -> None:
    runs = finished_runs(runs_dir)
    if not runs:
        raise EvidenceError(f"no finished run under {runs_dir} (folders <arm>_s<seed>)")
    out.mkdir(parents=True, exist_ok=True)
    histories, seeds = {}, {}
    for arm in ARMS:  # the study's order
        if arm not in runs:
            continue
        histories[arm], seeds[arm] = [], [seed for seed, _ in runs[arm]]
        for seed, folder in runs[arm]:
            csvs = sorted((folder / "csv").glob("version_*/metrics.csv"))
            shutil.copyfile(csvs[-1], out / f"{arm}_s{seed}.csv")
            histories[arm].append(read_csv_history(folder / "csv"))
    tokens, finals = arm_finals(histories)
    gaps = {arm: catch_up(histories[arm], histories["baseline"])  # the recipes; m-law arms apart
            for arm in histories if arm != "baseline" and "baseline" in histories
            and ARMS[arm].modulus in (None, QUICK_MODULUS)}
    fits = {recipe: law_fit(recipe, runs, out) for recipe in LAW_RECIPES
            if sum(a in runs for a in law_arms(recipe)) > 1}
    plot_study(histories, out / "wikitext_curves.png")
    steps = max(s for h in histories.values() for run in h for s, _ in run[METRIC])
    (out / "evidence.md").write_text(render_study(
        command=command, device=device_name(), steps=steps + 1,
        paired={arm: paired_differences(histories, seeds, tokens, arm)
                for arm in histories if arm != "baseline" and "baseline" in histories},
        compared_tokens=tokens, finals=finals, gaps=gaps, law=law_section(fits) if fits else [],
        corpus=CORPUS))
    print(f"wrote {out / 'evidence.md'}, {out / 'wikitext_curves.png'} and the runs' CSVs", flush=True)


def law_fit(recipe: str, runs: dict[str, list[tuple[int, Path]]], out: Path):
    """``oe report`` over the recipe's m-law runs (its own folder of curves, fit and report.md);
    the group it fitted (its runs and fit)."""
    from oe.analysis.runs import read_run
    from oe.analysis.statistics import fit_groups
    from oe.cli.report import main as report

    folders = [folder for arm in law_arms(recipe) for _, folder in runs.get(arm, [])]
    target = out / f"mlaw_{recipe}"
    shutil.rmtree(target, ignore_errors=True)
    if report([*map(str, folders), "--out", str(target), "--x", "tokens",
               "--metrics", "val/loss"]) != 0:
        raise EvidenceError(f"oe report failed on the m-law runs of {recipe}")
    groups = fit_groups([read_run(f) for f in folders], METRIC, 1)
    if len(groups) != 1:
        raise EvidenceError(f"the m-law runs of {recipe} fall into {len(groups)} fit groups")
    return groups[0]

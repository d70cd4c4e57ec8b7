"""``oe bench faults``: kill -9 at random moments of a sharded run; exact resumes, mixed steps.

A cfg3f OE-2 run (one layer, width 32) with one n-gram table of ``--modulus`` rows (default
1,000,003) on ``--devices`` CPU ranks (gloo) saves ``last.ckpt`` every ``--every`` steps. First
an uninterrupted reference run; then the same run in another folder is killed -9 (every rank at
once, as when a node fails) ``--kills`` times and resumed with ``--resume`` after each kill. Each
kill comes at a uniform random delay in [0, ``--window``] seconds after the current segment has
logged its first step, so it lands in training steps and in saves alike (a save of a 1M-row
table takes a good part of each two steps). A run that reaches its last step starts over in a
new folder.

Per kill it records whether a save was under way (a temporary table folder or file left), whether
the newest checkpoint is complete and its pair self-consistent (the main file's step equals its
table folder's ``pair.json``; otherwise a *mixed step*), and whether the resumed segment starts at
that checkpoint's step and logs the reference's losses bit for bit (*exact*).

``--early_stops N``: N runs that save only at the end get SIGTERM at a random moment before
their first save and are resumed with ``--resume true``: each must stop with exit 143 and one
``last.ckpt``, and the resume must reach the last step with the reference's losses.
``--full_disks N``: N runs write to a tmpfs of a random size that holds their first checkpoint
but not the second beside it, so a later save fails part-way (tables or file); each must exit 1
with one line, keep its previous checkpoint complete and leave no temporary; the tmpfs is then
grown and the run resumed to the end with the reference's losses. Mounting needs root; without
it the trial is skipped and says so.

Prints a table and writes the figures as JSON (default ``bench_results/faults.json``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from oe.bench.common import write_json
from oe.cli import fit_command
from oe.cli.table import print_table

ROOT = Path(__file__).resolve().parents[2]
KILLS_FILE = "kills.jsonl"  # one line per kill, written as it happens
OVERLAY = """
trainer:
  devices: {devices}
  accelerator: cpu
  max_steps: {steps}
  val_check_interval: 1000000
  limit_val_batches: 0
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  logger:
    - class_path: lightning.pytorch.loggers.CSVLogger
      init_args:
        name: csv
        flush_logs_every_n_steps: 1
checkpoint:
  every_n_train_steps: {every}
generation: null
ngram_stats: null
model:
  backbone:
    n_layer: 1
    n_head: 2
    n_embd: 32
  over_encoding:
    modulus: {modulus}
    shard_tables: true
data:
  init_args:
    batch_size: 4
    train_sentences: {sentences}
    epochs: 1
    val_sentences: 8
    num_workers: 0
"""


def fit_args(overlay: Path, run_dir: Path) -> list[str]:
    return ["--config", "configs/cfg_oe2.yaml", "--config", "configs/presets/quick_cfg.yaml",
            "--config", str(overlay), "--run_dir", str(run_dir)]


def start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    with open(log, "a") as handle:
        return subprocess.Popen(fit_command(*args), cwd=ROOT, env=env,
                                stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def segments(run_dir: Path) -> list[dict[int, str]]:
    """The logged training losses by step of each CSV version (one per started segment)."""
    versions = sorted(run_dir.glob("csv/version_*/metrics.csv"),
                      key=lambda p: int(p.parent.name.split("_")[1]))
    out = []
    for metrics in versions:
        with metrics.open() as handle:
            out.append({int(r["step"]): r["train/loss"] for r in csv.DictReader(handle)
                        if r.get("train/loss")})
    return out


def partial_saves(run_dir: Path) -> set[str]:
    """The temporary names of saves under way (or cut off) in the run's checkpoint folder."""
    folder = run_dir / "checkpoints"
    return {p.name for p in folder.glob("*.tmp")} if folder.is_dir() else set()


def inspect(run_dir: Path, before: set[str]) -> dict:
    """What a kill left: a save under way (a temporary name not there when the segment
    started), and the newest checkpoint's step and consistency."""
    from oe.distributed.checkpoint import CheckpointError, check_table_files, read_checkpoint

    last = run_dir / "checkpoints" / "last.ckpt"
    state = {"saving": bool(partial_saves(run_dir) - before), "step": None, "complete": False,
             "mixed": False}
    if not last.exists():
        return state
    try:
        checkpoint = read_checkpoint(last, mmap=True)
        state["step"] = int(checkpoint["global_step"])
        check_table_files(last, checkpoint)
        state["complete"] = True
    except CheckpointError as err:
        state["mixed"] = "mixed" in str(err)
        state["error"] = str(err)
    return state


def reference_losses(overlay: Path, work: Path) -> dict[int, str]:
    log = work / "reference.log"
    process = start(fit_args(overlay, work / "reference"), log)
    if process.wait() != 0:
        raise SystemExit(f"the reference run failed; see {log}")
    (losses,) = segments(work / "reference")
    return losses


def judge(chain_kills: list[dict], run_dir: Path, reference: dict[int, str], failed: bool) -> None:
    """Mark each kill of one chain: did the segment after it start at the newest checkpoint's
    step and log the reference's losses exactly? (Segment 0 is the run's first start.) A kill
    after the last step's checkpoint leaves nothing to train: exact if the resume finished."""
    logged = segments(run_dir)
    finished = run_dir / "finished.json"
    finished_step = json.loads(finished.read_text())["global_step"] if finished.exists() else None
    for index, kill in enumerate(chain_kills):
        after = logged[index + 1] if index + 1 < len(logged) else {}
        kill["resumed_from"] = min(after) if after else None
        if kill["step"] == len(reference) and not after:
            kill["exact"] = finished_step == kill["step"]
            continue
        kill["exact"] = (bool(after) and kill["resumed_from"] == kill["step"]
                         and all(reference.get(step) == loss for step, loss in after.items()))
    if failed and chain_kills:
        chain_kills[-1]["exact"] = False
        chain_kills[-1]["resume_failed"] = True


def checkpoint_names(run_dir: Path) -> list[str]:
    folder = run_dir / "checkpoints"
    return sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []


def exact_to_the_end(run_dir: Path, reference: dict[int, str]) -> bool:
    """Whether the run finished at the reference's last step with its losses, every step logged."""
    finished = run_dir / "finished.json"
    if not finished.exists() or json.loads(finished.read_text())["global_step"] != len(reference):
        return False
    logged: dict[int, set[str]] = {}
    for segment in segments(run_dir):
        for step, loss in segment.items():
            logged.setdefault(step, set()).add(loss)
    return sorted(logged) == sorted(reference) and all(
        values == {reference[step]} for step, values in logged.items())


def early_stops(args: argparse.Namespace, overlay: Path, work: Path, reference: dict[int, str],
                rng: random.Random) -> list[dict]:
    """SIGTERM before the first save (the run saves only at its end), then ``--resume true``."""
    quiet = ["--checkpoint.every_n_train_steps", str(10 * args.steps)]
    trials = []
    for index in range(args.early_stops):
        run_dir, log = work / f"stop{index}", work / f"stop{index}.log"
        process = start([*fit_args(overlay, run_dir), *quiet], log)
        while process.poll() is None and not (segments(run_dir) and segments(run_dir)[0]):
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, args.window))
        signalled = time.time()
        process.send_signal(signal.SIGTERM)
        code = process.wait()
        trial = {"stop_exit": code, "stop_seconds": round(time.time() - signalled, 2),
                 "after_stop": checkpoint_names(run_dir),
                 "stopped_at": max(segments(run_dir)[0], default=-1) + 1 if segments(run_dir) else 0}
        resumed = start([*fit_args(overlay, run_dir), *quiet, "--resume", "true"], log).wait()
        trial.update(resume_exit=resumed, exact=exact_to_the_end(run_dir, reference),
                     temporaries=sorted(partial_saves(run_dir)), at_end=checkpoint_names(run_dir))
        trial["late"] = code == 0  # the run ended before the signal came: no stop to judge
        trial["held"] = (code == 128 + signal.SIGTERM and trial["after_stop"] == ["last.ckpt"]
                         and resumed == 0 and trial["exact"] and not trial["temporaries"]
                         and trial["at_end"] == ["last.ckpt"])
        trials.append(trial)
        print(f"early stop {index + 1}: {json.dumps(trial)}", flush=True)
    return trials


def _mount(folder: Path, size: int, remount: bool = False) -> str | None:
    options = f"remount,size={size}" if remount else f"size={size}"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True, text=True)
    return None if done.returncode == 0 else (done.stderr.strip() or "mount failed")


def full_disks(args: argparse.Namespace, overlay: Path, work: Path, reference: dict[int, str],
               rng: random.Random) -> list[dict] | str:
    """Runs on a tmpfs that holds one checkpoint but not two; then grown, and resumed."""
    pair = sum(p.stat().st_size for p in (work / "reference" / "checkpoints").rglob("*")
               if p.is_file())
    trials = []
    for index in range(args.full_disks):
        disk = work / f"disk{index}"
        disk.mkdir()
        # room for the run's small files and one checkpoint, and for part of a second
        size = int(pair * rng.uniform(1.1, 1.9)) + 200_000
        why = _mount(disk, size)
        if why is not None:
            return f"skipped: a tmpfs cannot be mounted here ({why})"
        try:
            run_dir, log = disk / "run", work / f"disk{index}.log"
            code = start(fit_args(overlay, run_dir), log).wait()
            last = log.read_text().strip().splitlines()[-1] if log.exists() else ""
            trial = {"disk_bytes": size, "exit": code, "line": last,
                     "temporaries": sorted(partial_saves(run_dir)),
                     "kept": inspect(run_dir, set())}
            _mount(disk, 4 * size + pair, remount=True)  # space freed: resume
            trial["resume_exit"] = start([*fit_args(overlay, run_dir), "--resume", "true"],
                                         log).wait()
            trial["exact"] = exact_to_the_end(run_dir, reference)
            trial["held"] = (code == 1 and last.startswith("error: could not write")
                             and not trial["temporaries"] and trial["kept"]["complete"]
                             and trial["resume_exit"] == 0 and trial["exact"])
        finally:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)
        trials.append(trial)
        print(f"full disk {index + 1}: {json.dumps(trial)}", flush=True)
    return trials


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oe bench faults", description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--early_stops", type=int, default=0,
                        help="runs stopped by SIGTERM before their first save, then resumed")
    parser.add_argument("--full_disks", type=int, default=0,
                        help="runs whose disk fills during a save (a tmpfs; needs root)")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--modulus", type=int, default=1_000_003)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--window", type=float, default=4.0,
                        help="seconds after a segment's first logged step within which it is killed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="runs/bench_faults", help="folder of the runs (emptied)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--summarize", action="store_true",
                        help="judge the kills recorded in --work by a bench that was stopped")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(args.work).resolve()
    if args.summarize:
        return summarize_stopped(args, work)
    if work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True)
    overlay = work / "overlay.yaml"
    overlay.write_text(OVERLAY.format(devices=args.devices, steps=args.steps, every=args.every,
                                      modulus=args.modulus,
                                      sentences=args.steps * 4 * args.devices))
    started = time.time()
    reference = reference_losses(overlay, work)
    print(f"reference: {len(reference)} steps in {time.time() - started:.0f} s", flush=True)

    kills: list[dict] = []
    chain = 0
    while len(kills) < args.kills:
        run_dir, log = work / f"run{chain}", work / f"run{chain}.log"
        resume: list[str] = []
        failed = False
        while len(kills) < args.kills:
            before = partial_saves(run_dir)
            process = start([*fit_args(overlay, run_dir), *resume], log)
            resume = ["--resume", "true"]
            seen = len(segments(run_dir))
            while process.poll() is None and not (len(segments(run_dir)) > seen
                                                  and segments(run_dir)[seen]):
                time.sleep(0.05)
            delay = rng.uniform(0.0, args.window)
            deadline = time.time() + delay
            while process.poll() is None and time.time() < deadline:
                time.sleep(0.01)
            if process.poll() is not None:  # the run ended before the kill: finished, or failed
                failed = process.returncode != 0
                break
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            state = inspect(run_dir, before)
            state.update(chain=chain, delay_s=round(delay, 3))
            kills.append(state)
            with open(work / KILLS_FILE, "a") as record:
                record.write(json.dumps(state) + "\n")
            print(f"kill {len(kills)}: {json.dumps(state)}", flush=True)
        else:  # --kills reached: resume once more, so that the last kill is judged too
            failed = start([*fit_args(overlay, run_dir), *resume], log).wait() != 0
        judge([k for k in kills if k["chain"] == chain], run_dir, reference, failed)
        chain += 1

    stops = early_stops(args, overlay, work, reference, rng)
    disks = full_disks(args, overlay, work, reference, rng)
    return summarize(kills, args, chain, time.time() - started, stops, disks)


def summarize(kills: list[dict], args: argparse.Namespace, chains: int, seconds: float,
              stops: list[dict] | None = None, disks: list[dict] | str | None = None) -> int:
    exact = sum(bool(k.get("exact")) for k in kills)
    mixed = sum(k["mixed"] for k in kills)
    saving = sum(k["saving"] for k in kills)
    complete = sum(k["complete"] for k in kills)
    rows = [{"what": what, "count": count} for what, count in [
        ("kills", len(kills)), ("during a save", saving), ("newest checkpoint complete", complete),
        ("mixed steps", mixed), ("resumed exactly", exact)]]
    stops, disks = stops or [], disks if disks is not None else []
    if stops:
        rows += [{"what": what, "count": count} for what, count in [
            ("stops before the first save", sum(not t["late"] for t in stops)),
            ("  signal after the run ended", sum(t["late"] for t in stops)),
            ("  resumed exactly to the end", sum(t["exact"] for t in stops if not t["late"])),
            ("  lost (not exact)", sum(not t["exact"] for t in stops if not t["late"])),
            ("  left temporaries", sum(bool(t["temporaries"]) for t in stops if not t["late"])),
            ("  held (all checks)", sum(t["held"] for t in stops if not t["late"]))]]
    if isinstance(disks, str):
        rows.append({"what": "full disks", "count": disks})
    elif disks:
        rows += [{"what": what, "count": count} for what, count in [
            ("full disks", len(disks)),
            ("  one line, exit 1", sum(t["exit"] == 1 and t["line"].startswith("error: could not write")
                                       for t in disks)),
            ("  previous checkpoint kept", sum(t["kept"]["complete"] for t in disks)),
            ("  left temporaries", sum(bool(t["temporaries"]) for t in disks)),
            ("  resumed exactly to the end", sum(t["exact"] for t in disks)),
            ("  held (all checks)", sum(t["held"] for t in disks))]]
    rows.append({"what": "seconds", "count": round(seconds)})
    print_table(rows, ["what", "count"])
    write_json("faults", {"kills": len(kills), "during_save": saving, "complete": complete,
                          "mixed_steps": mixed, "resumed_exactly": exact, "devices": args.devices,
                          "modulus": args.modulus, "steps": args.steps, "every": args.every,
                          "window_s": args.window, "seed": args.seed, "chains": chains,
                          "per_kill": kills, "early_stops": stops, "full_disks": disks},
               args.out)
    held = all(t["held"] or t["late"] for t in stops) and all(
        t["held"] for t in (disks if isinstance(disks, list) else []))
    return 0 if exact == len(kills) and mixed == 0 and held else 1


def summarize_stopped(args: argparse.Namespace, work: Path) -> int:
    """Judge the kills of a stopped bench from its folder: its last kill is resumed first."""
    kills = [json.loads(line) for line in (work / KILLS_FILE).read_text().splitlines() if line]
    (reference,) = segments(work / "reference")
    overlay = work / "overlay.yaml"
    chains = sorted({k["chain"] for k in kills})
    for chain in chains:
        run_dir = work / f"run{chain}"
        chain_kills = [k for k in kills if k["chain"] == chain]
        failed = False
        if (len(segments(run_dir)) <= len(chain_kills)  # its last kill was never resumed
                and not (run_dir / "finished.json").exists()):
            log = work / f"run{chain}.log"
            failed = start([*fit_args(overlay, run_dir), "--resume", "true"], log).wait() != 0
        judge(chain_kills, run_dir, reference, failed)
    started = (work / "overlay.yaml").stat().st_mtime
    return summarize(kills, args, len(chains), time.time() - started)

if __name__ == "__main__":
    sys.exit(main())

"""``oe bench od``: training-step time of OD-3 and OT-3 against the baseline, and peak memory.

The models are those of the configs (``configs/cfg_{baseline,od3,oe3,ot3}.yaml``, at 85M with
``configs/backbones/gpt2_85m.yaml`` layered over them: their ``model`` sections, read by
``oe.cli.config`` as ``oe fit`` reads them), trained on the same cfg3f batch with AdamW. OE-3 is
there too, so that OT-3 / OE-3 is the price of the MTP module alone. Step times are measured
side by side (the kinds take turns every repeat) and given as ratios to the baseline. Peak memory comes from one
fresh process per kind: on CPU the peak resident set that building the model and two steps add
(Linux), on a GPU the peak allocated CUDA memory.

Options: ``--size 2m4|85m``, ``--batch`` (sentences), ``--repeats``, ``--device``, ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from datamodules.cfg import CFGStream, PAD_ID, VOCAB_SIZE
from oe.bench.common import peak_rss_mib, timed, write_json
from oe.cli.config import model_section, parse_fit_config
from oe.cli.table import print_table
from oe.models.build import build_arguments
from oe.models.heads import total_loss
from oe.training.lm import LanguageModel
from oe.cli.flags import Parser

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
KINDS = ("baseline", "od3", "oe3", "ot3")


def model_config(kind: str, size: str) -> dict:
    """The ``model`` section of ``configs/cfg_<kind>.yaml``; at 85M with the 85M backbone over it."""
    args = ["--config", str(CONFIGS / f"cfg_{kind}.yaml")]
    if size == "85m":
        args += ["--config", str(CONFIGS / "backbones" / "gpt2_85m.yaml")]
    return model_section(parse_fit_config(args))


def build(section: dict) -> LanguageModel:
    """The model of a ``model`` section, on the cfg3f vocabulary."""
    # The training loss is timed, so the LanguageModel; its optimiser settings do not matter here.
    return LanguageModel(**build_arguments({**section, "vocab_size": VOCAB_SIZE, "pad_id": PAD_ID}))


def cfg_batch(batch_size: int, device: torch.device) -> dict:
    stream = CFGStream(seed=0, batch_size=batch_size, batches_per_epoch=1, epochs=1)
    return {"input_ids": next(iter(stream))["input_ids"].to(device)}


def make_step(model: LanguageModel, batch: dict):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_sum, n_tokens, extra = model._loss(batch)
        total_loss(loss_sum / max(n_tokens, 1), extra).backward()
        optimizer.step()

    return step


def _rss_mib(field: str) -> float:
    """A memory figure of this process from /proc (VmRSS: now, VmHWM: peak since reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure_memory(kind: str, size: str, batch_size: int, device: str) -> dict:
    """In a fresh process: the memory that building one kind and two training steps add.

    On CPU, the peak resident set during model building and the steps, above the resident set
    after the imports (Linux: /proc/self/clear_refs resets the peak); on a GPU, the peak of
    allocated CUDA memory.
    """
    dev = torch.device(device)
    out = {}
    section = model_config(kind, size)  # read before the peak is reset: the config is not the model
    if dev.type == "cpu":
        Path("/proc/self/clear_refs").write_text("5")
        resting = _rss_mib("VmRSS")
    torch.manual_seed(0)
    model = build(section).to(dev)
    step = make_step(model, cfg_batch(batch_size, dev))
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        step()
    if dev.type == "cuda":
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        out["peak_added_mib"] = _rss_mib("VmHWM") - resting
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="oe bench od", description=__doc__)
    parser.add_argument("--size", choices=["2m4", "85m"], default="2m4")
    parser.add_argument("--batch", type=int, default=32, help="sentences per step")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None)
    parser.add_argument("--memory_of", choices=KINDS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1:
        parser.error("--batch and --repeats must be >= 1")
    if args.memory_of is not None:  # the child process of the memory measurement
        print(json.dumps(measure_memory(args.memory_of, args.size, args.batch, args.device)))
        return 0

    device = torch.device(args.device)
    batch = cfg_batch(args.batch, device)
    counted = int((batch["input_ids"][:, 1:] != PAD_ID).sum())
    steps, params = {}, {}
    for kind in KINDS:
        torch.manual_seed(0)
        model = build(model_config(kind, args.size)).to(device)
        params[kind] = sum(p.numel() for p in model.parameters())
        steps[kind] = make_step(model, batch)
        for _ in range(2):  # warm-up
            steps[kind]()
    times = {kind: [] for kind in KINDS}
    for _ in range(args.repeats):  # the kinds take turns, so that drifts hit all alike
        for kind in KINDS:
            times[kind].append(timed(steps[kind]))
    del steps

    rows = []
    base, base_min = statistics.median(times["baseline"]), min(times["baseline"])
    for kind in KINDS:
        child = subprocess.run(
            [sys.executable, "-m", "oe.bench", "od", "--memory_of", kind, "--size", args.size,
             "--batch", str(args.batch), "--device", args.device],
            capture_output=True, text=True, check=True,
        )
        memory = json.loads(child.stdout.strip().splitlines()[-1])
        median = statistics.median(times[kind])
        rows.append({
            "kind": kind, "params": params[kind], "step_ms": 1e3 * median,
            "min_ms": 1e3 * min(times[kind]), "max_ms": 1e3 * max(times[kind]),
            "vs_baseline": median / base, "min_vs_baseline": min(times[kind]) / base_min,
            "tokens_per_s": counted / median, **memory,
        })
    ot3_s, oe3_s = (statistics.median(times[k]) for k in ("ot3", "oe3"))
    columns = ["kind", "params", "step_ms", "min_ms", "max_ms", "vs_baseline", "min_vs_baseline",
               "tokens_per_s", "peak_cuda_mib" if device.type == "cuda" else "peak_added_mib"]
    print(f"cfg3f, {args.size}, batch {args.batch} sentences ({counted} counted targets), "
          f"{args.repeats} steps each, device {device}")
    print_table(rows, columns)
    print(f"OT-3 / OE-3 (the MTP module alone): {ot3_s / oe3_s:.3f}")
    write_json("od", {"size": args.size, "batch": args.batch, "repeats": args.repeats,
                      "counted_targets": counted, "rows": rows, "ot3_over_oe3": ot3_s / oe3_s},
               args.out)
    return 0

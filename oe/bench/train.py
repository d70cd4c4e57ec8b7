"""``oe bench train``: training throughput of padded against packed cfg3f rows.

The 2.4M cfg3f model (12 layers, width 128, 4 heads), baseline and OE-3 (orders {1, 2, 3},
modulus 1009: every n-gram its own row, tables as ordinary parameters), takes AdamW steps on the
same global batches of sentences in both layouts: padded (one sentence per row, causal kernel)
and packed (sentences packed whole, in rows as long as the micro-batch needs, the data module's
default, or ``--row_tokens`` long; attention inside each sentence).
Useful tokens are the counted targets (the same number in both layouts), so
``packed_over_padded`` (useful tokens/s packed divided by padded, same global batch) is the
speed-up of packing alone.

The precision axis: ``--precisions 32,bf16`` (the default) times the packed layout under bf16
autocast too (``bf16_over_fp32``: useful tokens/s of packed bf16 over packed fp32, per kind), and
``--modes eager,compiled`` adds the packed cases with the blocks compiled (inductor;
``compiled_over_eager``). Each case's useful GFLOP/s is set against the device's peak: a GPU's
dense bf16 tensor-core figure, or the CPU's nominal peak for the case's precision on the threads
it uses (``cpu_peak_gflops``).

Each case runs in its own process, which reports its peak resident memory (CPU) or peak CUDA
memory; the processes take turns step by step (interleaved rounds), so a machine whose load
changes slows every case alike. The generation-accuracy sampler is timed too: sentences/s of
sampling (as many steps as the longest of a batch of real sentences, the cost of a batch from a
trained model) plus parsing.

Options: ``--quick`` (global batch 64, a few rounds), ``--batch``, ``--rounds``, ``--device``,
``--precisions``, ``--modes``, ``--threads``, ``--out``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from datamodules.cfg import BOS_ID, PAD_ID, VOCAB_SIZE, CFGStream
from oe.bench.common import peak_rss_mib, write_json
from oe.cli.table import print_table
from oe.models.attention import positions_in_documents
from oe.models.embedding import OverEncodingConfig
from oe.models.decoding import sample_from_bos
from oe.models.gpt import BackboneConfig
from oe.training.lm import LanguageModel

KINDS = ("baseline", "oe3")
LAYOUTS = ("padded", "packed")
PRECISIONS = ("32", "bf16")
MODES = ("eager", "compiled")
MICRO_BATCH_TOKENS = 16384


def build(kind: str, compile: bool) -> LanguageModel:
    backbone = BackboneConfig(n_layer=12, n_head=4, n_embd=128, block_size=1024,
                              compile=compile)
    tables = (None if kind == "baseline"
              else OverEncodingConfig(orders=[2, 3], modulus=1009, shard_tables=False))
    torch.manual_seed(0)
    return LanguageModel(vocab_size=VOCAB_SIZE, pad_id=PAD_ID, backbone=backbone,
                         over_encoding=tables)


def batches(layout: str, batch_size: int, count: int, device: torch.device,
            row_tokens: int | None) -> list[dict]:
    """The first ``count`` global batches of the training stream in ``layout``."""
    stream = CFGStream(seed=0, batch_size=batch_size, batches_per_epoch=count, epochs=1,
                       shuffle_epochs=False, packed=layout == "packed", row_tokens=row_tokens,
                       micro_batch_tokens=MICRO_BATCH_TOKENS)
    return [{k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()} for b in stream]


# Dense bf16 tensor-core peaks (SXM cards), for model FLOPs utilisation.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}


def peak_tflops(device: torch.device, precision: str = "bf16", threads: int = 1) -> float | None:
    if device.type != "cuda":
        peak = cpu_peak_gflops(precision)
        return None if peak is None else peak * threads / 1e3
    name = torch.cuda.get_device_name(device)
    return next((peak for card, peak in PEAK_BF16_TFLOPS.items() if card in name), None)


def cpu_peak_gflops(precision: str) -> float | None:
    """Nominal peak GFLOP/s of one CPU core: FLOPs per cycle at the clock /proc/cpuinfo reports
    (no turbo). fp32: two FMA pipes of the widest vectors (AVX-512: 64 per cycle, AVX2: 32);
    bf16: AMX tiles 1,024, AVX512-BF16 dot products 128, otherwise emulated at the fp32 rate.
    Cores with a single 512-bit FMA pipe reach half of it. None where the system does not say."""
    from oe.training.precision import cpu_flags

    flags, cpuinfo = cpu_flags(), Path("/proc/cpuinfo")
    if not flags or not cpuinfo.is_file():
        return None
    mhz = next((float(line.split(":")[1]) for line in cpuinfo.read_text().splitlines()
                if line.startswith("cpu MHz")), None)
    if mhz is None:
        return None
    fp32 = 64 if "avx512f" in flags else 32 if "fma" in flags else 16
    per_cycle = fp32
    if precision == "bf16":
        per_cycle = 1024 if "amx_bf16" in flags else 128 if "avx512_bf16" in flags else fp32
    return per_cycle * mhz / 1e3


def training_flops(model: LanguageModel, batch: dict) -> float:
    """Useful training FLOPs of a batch (forward and backward: 3x the forward): 2 per weight of
    every matrix product (the blocks, the OE projection, the tied output head) per real token
    and, per layer, 4 x width per key a token attends to inside its own sentence. Both layouts
    hold the same sentences, so the same useful FLOPs: padding and masked pairs do not count."""
    gpt = model.model
    weights = sum(m.weight.numel() for m in gpt.modules() if isinstance(m, torch.nn.Linear))
    if gpt.head is None:  # the output head is the token embedding, transposed
        weights += gpt.config.n_embd * model.hparams.vocab_size
    ids = batch["input_ids"]
    real = ids != PAD_ID
    if "doc_ids" in batch:
        positions = positions_in_documents(batch["doc_ids"])
    else:
        positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    attended_keys = float(((positions + 1) * real).sum())
    forward = (2 * weights * float(real.sum())
               + 4 * gpt.config.n_embd * gpt.config.n_layer * attended_keys)
    return 3 * forward


def run_case(args: argparse.Namespace) -> None:
    """One case in this process: a step per line on stdin, its figures as a JSON line each."""
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    kind, layout, precision, mode = args.case.split(":")
    model = build(kind, mode == "compiled").to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.98))
    data = batches(layout, args.batch, 4, device, args.row_tokens or None)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    flops = [training_flops(model, batch) for batch in data]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step, _ in enumerate(sys.stdin):
        batch = data[step % len(data)]
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss_sum, n_tokens, _ = model._loss(batch)
        (loss_sum / n_tokens).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
        ids = batch["input_ids"]
        memory = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
                  else peak_rss_mib())
        print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds,
                          "tokens": int(n_tokens), "positions": ids.numel(),
                          "rows": ids.shape[0], "peak_mib": memory, "page_faults": faults,
                          "flops": flops[step % len(data)],
                          # graphs the compiled blocks have needed so far (oe.models.compile)
                          "compilations": getattr(model.model.__dict__.get("compiled_blocks"),
                                                  "compilations", 0)}), flush=True)


def time_sampler(batch: int, device: torch.device, timed_steps: int | None = None) -> dict:
    """Sentences/s of the generation-accuracy sampler on the 2.4M baseline (untrained).

    A batch takes as many steps as its longest sentence; ``timed_steps`` times only that many
    and scales the time to the whole batch (a step's cost grows little with the cache's length
    at this width)."""
    from oe.cfg import accepts_padded, sample

    model = build("baseline", compile=False).model.to(device).eval()
    symbols, lengths = sample(0, np.arange(batch))
    steps = int(lengths.max()) + 1  # a batch runs until its longest sentence ends
    timed = min(steps, timed_steps or steps)
    generator = torch.Generator(device=device).manual_seed(0)
    start = time.perf_counter()
    # No end token: exactly `timed` steps, as for real sentences.
    sample_from_bos(model, batch, BOS_ID, None, timed, generator)
    sampling = (time.perf_counter() - start) * steps / timed
    start = time.perf_counter()
    accepts_padded(symbols, lengths)
    parsing = time.perf_counter() - start
    return {"batch": batch, "steps": steps, "timed_steps": timed, "sampling_s": sampling,
            "parsing_s": parsing, "sentences_per_s": batch / (sampling + parsing)}


def case_names(precisions: list[str], modes: list[str]) -> list[str]:
    """``kind:layout:precision:mode``: both layouts in the first precision, eager (or the first
    mode); the packed layout alone in every other precision and mode."""
    first = (precisions[0], modes[0])
    return [f"{kind}:{layout}:{precision}:{mode}" for kind in KINDS
            for mode in modes for precision in precisions for layout in LAYOUTS
            if layout == "packed" or (precision, mode) == first]


def take_turns(workers: dict[str, subprocess.Popen], warmup: int, rounds: int,
               describe=lambda step: "") -> dict[str, list[dict]]:
    """One step of each worker in turn per round (``run_case`` workers), ``warmup`` untimed
    rounds then ``rounds`` timed ones; each worker's timed steps. Closes the workers."""
    results: dict[str, list[dict]] = {name: [] for name in workers}
    try:
        for round_index in range(warmup + rounds):
            for name, worker in workers.items():
                worker.stdin.write("step\n")
                worker.stdin.flush()
                line = worker.stdout.readline()
                if not line:
                    raise RuntimeError(f"the worker of {name} stopped (its error is above)")
                step = json.loads(line)
                print(f"round {round_index + 1 - warmup}: {name} {step['seconds']:.2f} s"
                      f"{describe(step)}", flush=True)
                if round_index >= warmup:
                    results[name].append(step)
    finally:
        for worker in workers.values():
            worker.stdin.close()
            worker.wait()
    return results


def measure(args: argparse.Namespace) -> dict:
    """Every case of ``case_names`` in its own worker process, taking turns step by step;
    prints the table and returns the figures."""
    cases = case_names(args.precisions, args.modes)
    workers = {}
    for case in cases:
        command = [sys.executable, "-m", "oe.bench.train", "--case", case, "--batch",
                   str(args.batch), "--device", args.device, "--row_tokens", str(args.row_tokens)]
        command += ["--threads", str(args.threads)] if args.threads else []
        workers[case] = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True)
    results = take_turns(workers, args.warmup, args.rounds)

    device = torch.device(args.device)
    threads = args.threads or torch.get_num_threads()
    memory_key = "peak_rss_mib" if device.type == "cpu" else "peak_cuda_mib"
    figures = {}
    for case, steps in results.items():
        seconds = statistics.median(s["seconds"] for s in steps)
        cpu_seconds = statistics.median(s["cpu_seconds"] for s in steps)
        tokens = steps[0]["tokens"]
        tflops_per_s = statistics.median(s["flops"] / s["seconds"] for s in steps) / 1e12
        peak = peak_tflops(device, case.split(":")[2], threads)
        figures[case] = {
            "step_s": seconds, "useful_tokens": tokens, "positions": steps[0]["positions"],
            "rows": steps[0]["rows"], "useful_tokens_per_s": tokens / seconds,
            "cpu_s": cpu_seconds, "useful_tokens_per_cpu_s": tokens / cpu_seconds,
            "real_share": tokens / steps[0]["positions"],
            memory_key: max(s["peak_mib"] for s in steps),
            "useful_tflops_per_s": tflops_per_s, "useful_gflops_per_s": 1e3 * tflops_per_s,
            "peak_gflops_per_s": 1e3 * peak if peak else None,
            "mfu": tflops_per_s / peak if peak else None,
            "step_s_all": [s["seconds"] for s in steps],
            "compilations": max(s.get("compilations", 0) for s in steps),
        }
    first = f"{args.precisions[0]}:{args.modes[0]}"

    def ratio(over: str, under: str, key: str = "useful_tokens_per_s") -> dict[str, float]:
        return {kind: figures[f"{kind}:{over}"][key] / figures[f"{kind}:{under}"][key]
                for kind in KINDS if f"{kind}:{over}" in figures and f"{kind}:{under}" in figures}

    ratios = ratio(f"packed:{first}", f"padded:{first}")
    # Process CPU time: the same ratio, less sensitive to other processes on a shared machine.
    cpu_ratios = ratio(f"packed:{first}", f"padded:{first}", "useful_tokens_per_cpu_s")
    bf16_over_fp32 = {mode: ratio(f"packed:bf16:{mode}", f"packed:32:{mode}")
                      for mode in args.modes}
    compiled_over_eager = {precision: ratio(f"packed:{precision}:compiled",
                                            f"packed:{precision}:eager")
                           for precision in args.precisions}
    table = [{"case": case, "rows x width": f"{f['rows']}x{f['positions'] // f['rows']}",
              "real": f"{f['real_share']:.2f}", "step s": f"{f['step_s']:.3f}",
              "cpu s": f"{f['cpu_s']:.3f}", "useful tok/s": f"{f['useful_tokens_per_s']:,.0f}",
              "GFLOP/s": f"{f['useful_gflops_per_s']:,.1f}",
              "of peak": f"{f['mfu']:.1%}" if f["mfu"] is not None else "-",
              memory_key: f"{f[memory_key]:,.0f}"} for case, f in figures.items()]
    print_table(table, list(table[0]))
    for kind, value in ratios.items():
        print(f"packed_over_padded {kind}: {value:.2f} (wall), {cpu_ratios[kind]:.2f} (CPU time)")
    for mode, by_kind in bf16_over_fp32.items():
        for kind, value in by_kind.items():
            print(f"bf16_over_fp32 {kind} ({mode}): {value:.2f}")
    for precision, by_kind in compiled_over_eager.items():
        for kind, value in by_kind.items():
            print(f"compiled_over_eager {kind} ({precision}): {value:.2f}")
    return {
        "batch": args.batch, "rounds": args.rounds, "device": device_name(device),
        "threads": threads, "precisions": args.precisions, "modes": args.modes,
        "row_tokens": args.row_tokens or None, "cases": figures,
        memory_key: {case: f[memory_key] for case, f in figures.items()},
        "packed_over_padded": ratios.get("baseline"), "packed_over_padded_by_kind": ratios,
        "packed_over_padded_cpu_time_by_kind": cpu_ratios,
        "bf16_over_fp32": bf16_over_fp32.get("eager", {}).get("baseline"),
        "bf16_over_fp32_by_kind": bf16_over_fp32, "compiled_over_eager": compiled_over_eager,
    }


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oe bench train")
    parser.add_argument("--quick", action="store_true", help="global batch 64, 2 rounds")
    parser.add_argument("--suite", choices=["gpu"], default=None,
                        help="gpu: bf16, eager then compiled, in one call (train_gpu.json)")
    parser.add_argument("--batch", type=int, default=None, help="sentences per global batch")
    parser.add_argument("--rounds", type=int, default=None, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per case")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precisions", default="32,bf16",
                        help="comma-separated, of 32 and bf16 (autocast); the first also times "
                             "the padded layout (default: 32,bf16)")
    parser.add_argument("--modes", default="eager",
                        help="comma-separated, of eager and compiled (the blocks under "
                             "torch.compile); the first also times the padded layout")
    parser.add_argument("--sampler_batch", type=int, default=None,
                        help="rows sampled together (the callback's default: 500)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per case (default: torch's); 1 is steadier on a "
                             "machine shared with other processes")
    parser.add_argument("--row_tokens", type=int, default=0,
                        help="packed row length; 0 (the default, data.row_tokens null): rows as "
                             "long as the micro-batch needs")
    parser.add_argument("--out", default=None)
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # a worker process
    args = parser.parse_args(argv)
    args.batch = args.batch or (64 if args.quick else 512)
    args.rounds = args.rounds or (2 if args.quick else 5)
    if args.case:
        run_case(args)
        return 0
    args.precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for name, given, known in (("--precisions", args.precisions, PRECISIONS),
                               ("--modes", args.modes, MODES)):
        if not given or set(given) - set(known) or len(set(given)) < len(given):
            parser.error(f"{name} takes distinct values among {', '.join(known)}; got "
                         f"{','.join(given) or 'nothing'}")
    if "compiled" in args.modes:
        # Each of the 4 batches has its own shape, and a one-row micro-batch compiles anew:
        # one pass over them compiles every graph before the timed rounds.
        args.warmup = max(args.warmup, 4)
    if args.suite == "gpu":
        if args.device != "cuda":
            raise SystemExit("--suite gpu needs a CUDA device (--device cuda)")
        args.precisions, args.warmup = ["bf16"], max(args.warmup, 4)  # as above
        runs = {}
        for mode in MODES:
            args.modes = [mode]
            runs[mode] = measure(args)
        write_json("train_gpu", runs, args.out)
        return 0

    figures = measure(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    sampler = time_sampler(args.sampler_batch or 500, torch.device(args.device),
                           timed_steps=32 if args.quick else None)
    print(f"generation sampler: {sampler['sentences_per_s']:.1f} sentences/s "
          f"(batch {sampler['batch']}, {sampler['steps']} steps)")
    write_json("train", {**figures, "sampler": sampler}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

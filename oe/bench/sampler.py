"""``oe bench sampler``: sampling cfg3f sentences from BOS, with and without dropping ended rows.

The generation-accuracy callback samples a batch of sentences from BOS (``sample_from_bos``);
rows end at their own lengths. ``oe.models.decoding.decode`` stops computing the rows that ended
(``drop_ended_rows``); this times it against computing every row until the longest ends, in
interleaved rounds with the same seed per round, and checks that both give the same samples.
``--checkpoint`` samples from a trained run (e.g. the quick preset's
``runs/cfg_baseline/checkpoints/last.ckpt``), whose sentence lengths are those of the grammar;
without it, the untrained 2.4M baseline, whose rows end after a few tokens.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from callbacks.generation import MAX_LENGTH
from datamodules.cfg import BOS_ID, EOS_ID
from oe.bench.common import write_json
from oe.cli.table import print_table
from oe.models.decoding import Sampling, decode


def load(checkpoint: str | None):
    if checkpoint is None:
        from oe.bench.train import build
        return build("baseline", compile=False).model.eval()
    from oe.huggingface.load import load_for_evaluation
    return load_for_evaluation(checkpoint)[0].eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oe bench sampler", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="a run's checkpoint (default: the "
                        "untrained 2.4M baseline)")
    parser.add_argument("--rows", type=int, default=128, help="sentences sampled together "
                        "(the quick preset's generation.batch_size)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    for name in ("rows", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load(args.checkpoint)
    device = model.position.weight.device
    prompts = torch.full((args.rows, 1), BOS_ID, device=device)
    seconds: dict[str, list[float]] = {"drop_ended_rows": [], "every_row": []}
    lengths = []
    for round_index in range(args.rounds):
        arms = list(seconds) if round_index % 2 == 0 else list(reversed(seconds))
        samples = {}
        for arm in arms:  # alternating which goes first
            start = time.perf_counter()
            samples[arm] = decode(model, prompts, MAX_LENGTH + 1, Sampling(1.0),
                                  torch.Generator(device=device).manual_seed(round_index), EOS_ID,
                                  drop_ended_rows=arm == "drop_ended_rows")
            seconds[arm].append(time.perf_counter() - start)
        if not torch.equal(samples["drop_ended_rows"], samples["every_row"]):
            raise RuntimeError("dropping ended rows changed the samples")
        ended = samples["every_row"] == EOS_ID
        lengths += torch.where(ended.any(1), ended.long().argmax(1), ended.shape[1]).tolist()
        print(f"round {round_index + 1}: " + ", ".join(f"{arm} {seconds[arm][-1]:.1f} s"
                                                       for arm in arms), flush=True)
    medians = {arm: statistics.median(values) for arm, values in seconds.items()}
    print_table([{"arm": arm, "seconds (median)": f"{value:.2f}",
                  "sentences/s": f"{args.rows / value:.1f}"} for arm, value in medians.items()],
                ["arm", "seconds (median)", "sentences/s"])
    ratio = medians["every_row"] / medians["drop_ended_rows"]
    print(f"every_row_over_drop: {ratio:.2f} (same samples; mean length {statistics.mean(lengths):.0f}, "
          f"longest {max(lengths)})")
    write_json("sampler", {"checkpoint": args.checkpoint, "rows": args.rows, "rounds": args.rounds,
                           "seconds": seconds, "median_s": medians, "every_row_over_drop": ratio,
                           "mean_length": statistics.mean(lengths), "longest": max(lengths)},
               args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

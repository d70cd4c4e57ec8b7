"""``oe bench cfg``: speed of the cfg3f sampler, checker and data stream (one core).

Targets: sampler >= 20,000 sentences/s; checker >= 2,000 sentences/s; producing a batch takes a
small fraction of a training step of the 2.4M model on the same batch.
"""

from __future__ import annotations


import numpy as np
import torch

from datamodules.cfg import CFGStream
from oe.bench.common import time_call, write_json
from oe.cli.table import print_table
from oe.cfg import accepts_padded, sample
from oe.training.lm import LanguageModel
from oe.cli.flags import Parser


def _mutate(symbols: np.ndarray, lengths: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One random substitution, insertion or deletion per sentence."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(lengths), symbols.shape[1] + 1), dtype=symbols.dtype)
    new_lengths = lengths.copy()
    for r, n in enumerate(lengths):
        s = list(symbols[r, :n])
        pos = int(rng.integers(n))
        kind = rng.integers(3)
        if kind == 0:
            s[pos] = (s[pos] % 3) + 1
        elif kind == 1:
            s.insert(pos, int(rng.integers(1, 4)))
        else:
            del s[pos]
        out[r, : len(s)] = s
        new_lengths[r] = len(s)
    return out, new_lengths


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="oe bench cfg", description=__doc__)
    parser.add_argument("--sentences", type=int, default=10_000)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[32, 512])
    parser.add_argument("--max_train_batch", type=int, default=64,
                        help="time a training step only up to this batch size")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the targets are per core
    n = args.sentences
    sample(0, np.arange(10))  # compile
    accepts_padded(*sample(0, np.arange(10)))

    rows = []
    timing = time_call(lambda: sample(1, np.arange(n)), repeats=3, warmup=1)
    rows.append({"what": "sampler", "per_s": n / timing["median_s"], "unit": "sentences/s",
                 "target": 20_000})
    symbols, lengths = sample(1, np.arange(n))
    timing = time_call(lambda: accepts_padded(symbols, lengths), repeats=3, warmup=1)
    valid = accepts_padded(symbols, lengths).mean()
    rows.append({"what": "checker, sampled", "per_s": n / timing["median_s"],
                 "unit": "sentences/s", "target": 2_000, "accepted": float(valid)})
    mutated, mutated_lengths = _mutate(symbols, lengths, 2)
    timing = time_call(lambda: accepts_padded(mutated, mutated_lengths), repeats=3, warmup=1)
    rows.append({"what": "checker, 1-symbol mutations", "per_s": n / timing["median_s"],
                 "unit": "sentences/s", "target": 2_000,
                 "accepted": float(accepts_padded(mutated, mutated_lengths).mean())})

    model = LanguageModel()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for batch_size in args.batch_sizes:
        stream = CFGStream(seed=3, batch_size=batch_size, batches_per_epoch=1000, epochs=1)
        iterator = iter(stream)
        timing = time_call(lambda: next(iterator), repeats=5, warmup=1)
        batch = next(iterator)

        def step():
            optimizer.zero_grad()
            loss_sum, count, _ = model._loss(batch)
            (loss_sum / count).backward()
            optimizer.step()

        row = {"what": f"data stream, batch {batch_size}", "per_s": 1 / timing["median_s"],
               "unit": "batches/s", "data_s": timing["median_s"]}
        # A CPU training step at batch 512 would need tens of GB for attention: GPU territory.
        if batch_size <= args.max_train_batch:
            row["train_step_s"] = time_call(step, repeats=3, warmup=1)["median_s"]
            row["data/step"] = row["data_s"] / row["train_step_s"]
        rows.append(row)
    print_table(rows, ["what", "per_s", "unit", "target", "accepted", "data_s", "train_step_s",
                       "data/step"])
    write_json("cfg", {"sentences": n, "threads": 1, "rows": rows}, args.out)
    return 0

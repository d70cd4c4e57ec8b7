"""``oe bench oe``: training-step time of OE-3 against the baseline, side by side.

For each shape (the 2.4M cfg3f model, and a GPT-2-small-like Wikitext shape), the baseline and
OE-3 models with m in {1e3, 1e5, 1e6} (+1, so that m is odd) are built in one process and timed
in interleaved rounds (forward, backward with the fused table update, dense AdamW step), so
that noise on this shared machine hits them alike. The tables are sharded exactly as in
training (oe.distributed.parallelize, one rank), so only the rows a batch touches cost anything.

Targets: ratio OE-3 / baseline <= 1.10 at the 2.4M cfg3f model, not growing with m.
"""

from __future__ import annotations

import statistics

import torch

from oe.bench.common import peak_rss_mib, timed, write_json
from oe.cli.table import print_table
from oe.models.embedding import OverEncodingConfig
from oe.training.lm import LanguageModel
from oe.models.gpt import BackboneConfig
from oe.distributed.parallelize import TableSharding, shard_embedding, state_floats_per_row
from oe.cli.flags import Parser

SHAPES = {
    # name: (vocab, backbone, batch, length)
    "cfg3f-2.4M": (6, BackboneConfig(n_layer=12, n_head=4, n_embd=128), 32, 256),
    "wikitext-gpt2-small": (50257, BackboneConfig(n_layer=12, n_head=12, n_embd=768), 2, 256),
}


def build(vocab: int, backbone: BackboneConfig, modulus: int | None):
    over_encoding = None if modulus is None else OverEncodingConfig(orders=[2, 3], modulus=modulus)
    module = LanguageModel(vocab_size=vocab, backbone=backbone, over_encoding=over_encoding)
    if over_encoding is not None:
        sharding = TableSharding(optimizer="rowwise_adagrad", lr=1e-3, weight_decay=0.0,
                                 seed=module.model.embedding.table_seed, init_std=0.02)
        shard_embedding(module.model.embedding, sharding, torch.device("cpu"))
    tables = {id(p) for p in module.table_parameters()}
    dense = [p for p in module.parameters() if id(p) not in tables]
    optimizer = torch.optim.AdamW(dense, lr=1e-4, betas=(0.9, 0.98), weight_decay=0.1)
    return module, optimizer


def table_mib(dim: int, modulus: int) -> float:
    """Memory of the two OE-3 tables (width D/2, moduli m and m+2) and their row-wise Adagrad
    state: the only memory OE-3 adds beside a D x D projection."""
    width = dim // 2
    rows = modulus + (modulus + 2)
    return rows * (width + state_floats_per_row("rowwise_adagrad", width)) * 4 / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="oe bench oe", description=__doc__)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--moduli", type=int, nargs="+", default=[1_001, 100_001, 1_000_001])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows = []
    for shape in args.shapes:
        vocab, backbone, batch, length = SHAPES[shape]
        generator = torch.Generator().manual_seed(1)
        data = {"input_ids": torch.randint(1, vocab, (batch, length + 1), generator=generator)}
        kinds = {"baseline": None, **{f"oe3 m={m:,}": m for m in args.moduli}}
        models = {name: build(vocab, backbone, m) for name, m in kinds.items()}

        def step(module, optimizer):
            optimizer.zero_grad(set_to_none=True)
            loss_sum, count, _ = module._loss(data)
            (loss_sum / count).backward()
            optimizer.step()

        times = {name: [] for name in models}
        for name, (module, optimizer) in models.items():
            step(module, optimizer)  # warm-up
        for _ in range(args.rounds):
            for name, (module, optimizer) in models.items():
                times[name].append(timed(lambda: step(module, optimizer)))
        base = statistics.median(times["baseline"])
        for name, m in kinds.items():
            median = statistics.median(times[name])
            rows.append({
                "shape": shape, "model": name, "step_s": median, "ratio": median / base,
                "tokens_per_s": batch * length / median,
                "table_MiB": 0.0 if m is None else table_mib(backbone.n_embd, m),
            })
        del models
    print_table(rows, ["shape", "model", "step_s", "ratio", "tokens_per_s", "table_MiB"])
    print(f"peak resident memory of the process: {peak_rss_mib():,.0f} MiB")
    write_json("oe", {"rounds": args.rounds, "threads": torch.get_num_threads(), "rows": rows,
                      "peak_rss_mib": peak_rss_mib()}, args.out)
    return 0

"""``oe plan --config X.yaml --world_size W``: memory per rank of a sharded OE model.

Builds the config's model on the meta device (no memory, any table size), splits every n-gram
table row-wise over W ranks as ``oe.distributed.parallelize`` does, and prints per rank: the table rows, the
fused optimiser's state for each choice, and the dense model (replicated by DDP: weights,
gradients and AdamW's two moments). fp32 throughout. ``--modulus``, ``--n_embd`` and ``--n_head``
override the config, e.g. the paper's scale:

    oe plan --config configs/cfg_oe3.yaml --world_size 64 \
        --modulus 12800001 --n_embd 2048 --n_head 16 --vocab_size 50257
"""

from __future__ import annotations
import sys

from oe.cli.flags import Parser

# plan's own flags, as the oe.fit fields they override
OVERRIDES = {"modulus": "model.over_encoding.modulus", "n_embd": "model.backbone.n_embd",
             "n_head": "model.backbone.n_head"}


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="oe plan", description=__doc__.split("\n")[0])
    parser.add_argument("--config", action="append", required=True,
                        help="config(s) as for oe.cli.fit, read the same way; later ones override")
    parser.add_argument("--world_size", type=int, required=True, help="number of ranks")
    parser.add_argument("--vocab_size", type=int, help="default: the config's data module's")
    parser.add_argument("--modulus", type=int, help="override model.over_encoding.modulus")
    parser.add_argument("--n_embd", type=int, help="override model.backbone.n_embd")
    parser.add_argument("--n_head", type=int, help="override model.backbone.n_head")
    args = parser.parse_args(argv)
    # The model's stack (torch, lightning) only after parsing: ``oe plan --help`` answers at once.
    from oe.analysis.memory_plan import build_on_meta, plan, print_plan
    from oe.cli.config import ConfigError, instantiate_data, model_section, parse_fit_config

    try:
        if args.world_size < 1:
            raise ValueError(f"--world_size must be >= 1, got {args.world_size}")
        fit_args = [word for path in args.config for word in ("--config", path)]
        for flag, field in OVERRIDES.items():
            if getattr(args, flag) is not None:
                fit_args += [f"--{field}", str(getattr(args, flag))]
        config = parse_fit_config(fit_args)
        vocab = args.vocab_size or int(instantiate_data(config).vocab_size)
        model = build_on_meta(model_section(config), vocab)
        figures = plan(model, args.world_size)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_plan(figures, figures["table_optimizer"])
    return 0

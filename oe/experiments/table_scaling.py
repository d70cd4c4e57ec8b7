"""``oe table-scaling``: the frozen-GPT-2 + n-gram pipeline in miniature, offline.

Loss against log(table size) for a frozen backbone widened with n-gram tables, on a local corpus,
in a few minutes on 2 CPU cores. Every step is the real pipeline:

1. ``oe.experiments.corpus`` writes Python's standard-library docstrings as a Wikitext-format corpus.
2. ``oe.cli.fit`` trains a small GPT-2 on it from scratch (wikitext_baseline.yaml +
   presets/wikitext_quick.yaml, a byte-level BPE of 4,096 ids); ``oe.models.pretrained.save_gpt2`` writes it in
   Hugging Face format with its tokenizer.json: the stand-in for pretrained GPT-2, which the hub
   would give online.
3. For each size, ``oe.cli.fit`` with configs/wikitext_gpt2_oe.yaml (zero-initialised hashed tables,
   orders 2 and 3, m rows each) or configs/wikitext_gpt2_frequent.yaml (the top-K mined 2- and
   3-grams of ``oe.analysis.mining``, K rows each) trains the tables alone, the backbone frozen.
4. The validation loss of each run, and of the frozen backbone alone, goes to a PNG and a JSON.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import yaml

from oe.analysis.statistics import fit_log_linear
from oe.cli.flags import Parser

OVERLAY = "overlay.yaml"


def _fit(args: list[str], run_dir: Path) -> dict:
    """Run ``oe.cli.fit`` with everything written under ``run_dir``; its finished.json."""
    from oe.cli.fit import main as fit_main

    args = [*args, "--run_dir", str(run_dir)]
    code = fit_main(args)
    if code != 0:
        raise RuntimeError(f"oe.cli.fit failed ({code}): {' '.join(args)}")
    return json.loads((run_dir / "finished.json").read_text())


def _overlay(path: Path, data: dict, run_root: Path) -> Path:
    """Local data, CSV logging only, a checkpoint at the end: layered over any wikitext config."""
    config = {
        "trainer": {
            "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                        "init_args": {"save_dir": str(run_root), "name": "csv"}}],
            "enable_progress_bar": False,
        },
        "checkpoint": {"save_last": True, "save_top_k": 0, "every_n_train_steps": None},
        "downstream": None,  # the tasks would come from the hub
        "data": {"init_args": data},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def _table_run(root: Path, config: str, data: dict, args: list[str]) -> float:
    """One run of trained tables over the frozen backbone, from scratch in ``root``: its
    validation loss."""
    shutil.rmtree(root, ignore_errors=True)
    summary = _fit(["--config", config, "--config", str(_overlay(root / OVERLAY, data, root)),
                    *args], root)
    return summary["metrics"]["val/loss"]


def frozen_loss(source: str, datamodule) -> float:
    """Validation loss of the frozen backbone alone (what every table run starts from)."""
    import torch

    from oe.models.build import build_model
    from oe.models.heads import shifted_targets
    from oe.models.losses import summed_cross_entropy

    gpt = build_model(vocab_size=datamodule.vocab_size, pad_id=datamodule.pad_id,
                      pretrained=source).gpt.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in datamodule.val_stream():
            ids, doc_ids = batch["input_ids"], batch.get("doc_ids")
            targets = shifted_targets(ids, 1, datamodule.pad_id)
            logits = gpt(ids[:, :-1], None if doc_ids is None else doc_ids[:, :-1])
            loss_sum, n = summed_cross_entropy(logits, targets)
            total, count = total + float(loss_sum), count + n
    return total / int(count)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for kind, label, marker in (("hashed", "hashed OE tables (orders 2, 3; m rows each)", "o"),
                                ("frequent", "frequent n-gram rows (top-K 2-, 3-grams)", "s")):
        runs = results[kind]
        if runs:
            ax.plot([r["rows"] for r in runs], [r["val_loss"] for r in runs], marker=marker,
                    label=label)
    ax.axhline(results["frozen_val_loss"], color="grey", linestyle="--", label="frozen backbone alone")
    ax.set_xscale("log")
    ax.set_xlabel("rows per order (m or K), log scale")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title("Frozen GPT-2-format backbone + trained n-gram tables\n"
                 f"(stdlib-docstring corpus, {results['table_steps']} steps per run)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="oe table-scaling", description=__doc__.split("\n")[0])
    parser.add_argument("--work_dir", default="runs/table_scaling")
    parser.add_argument("--png", default="docs/frozen_gpt2_table_scaling.png")
    parser.add_argument("--json", default="docs/frozen_gpt2_table_scaling.json")
    parser.add_argument("--moduli", default="1001,8001,64001", help="hashed rows per table")
    parser.add_argument("--top_k", default="100,1000,10000", help="frequent rows per order")
    parser.add_argument("--pretrain_steps", type=int, default=200)
    parser.add_argument("--table_steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is fastest on a small, shared CPU)")
    parser.add_argument("--block_size", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--reuse_backbone", action="store_true",
                        help="keep <work_dir>/gpt2 from an earlier run instead of training it again")
    parser.add_argument("--lr", type=float, default=1e-3, help="dense (projection) learning rate")
    parser.add_argument("--hashed_table_lr", type=float, default=0.05,
                        help="hashed tables' fused row-wise Adagrad learning rate")
    parser.add_argument("--frequent_table_lr", type=float, default=3e-3,
                        help="frequent rows' AdamW learning rate")
    args = parser.parse_args(argv)
    import torch  # after parsing: --help answers at once

    torch.set_num_threads(args.threads)
    moduli = [int(m) for m in args.moduli.split(",") if m]
    top_ks = [int(k) for k in args.top_k.split(",") if k]
    work = Path(args.work_dir)
    started = time.time()

    from datamodules.wikitext import WikitextDataModule
    from oe.experiments.corpus import write_corpus
    from oe.cli.mine import main as mine_main
    from oe.huggingface.load import load_for_evaluation
    from oe.models.pretrained import save_gpt2

    corpus = write_corpus(work / "corpus")
    block, batch = args.block_size, args.batch_size
    data = {"data_files": {k: str(v) for k, v in corpus.items()}, "block_size": block,
            "batch_size": batch, "val_blocks": 128, "num_workers": 0,
            "cache_dir": str(work / "cache"), "tokenizer": "bpe", "bpe_vocab_size": 4096}

    # 2. The backbone, trained from scratch and written in HF format.
    root = work / "pretrain"
    gpt2 = work / "gpt2"
    if not (args.reuse_backbone and (gpt2 / "config.json").is_file()):
        shutil.rmtree(root, ignore_errors=True)
        _fit(["--config", "configs/wikitext_baseline.yaml", "--config", "configs/presets/wikitext_quick.yaml",
              "--config", str(_overlay(root / OVERLAY, data, root)),
              "--trainer.max_steps", str(args.pretrain_steps),
              "--trainer.val_check_interval", str(args.pretrain_steps),
              "--seed_everything", "0"], root)
        backbone, _ = load_for_evaluation(root / "checkpoints" / "last.ckpt")
        save_gpt2(backbone, gpt2)
    dm = WikitextDataModule(**data)
    shutil.copy(dm.tokenizer_file, gpt2 / "tokenizer.json")
    frozen = frozen_loss(str(gpt2), dm)
    print(f"frozen backbone alone: val loss {frozen:.4f}")

    data = {**data, "tokenizer": str(gpt2)}
    common = ["--model.pretrained", str(gpt2), "--trainer.max_steps", str(args.table_steps),
              "--trainer.val_check_interval", str(args.table_steps), "--seed_everything", "0",
              "--model.optimizer.warmup_steps", "20", "--model.optimizer.lr", str(args.lr)]
    results = {"frozen_val_loss": frozen, "table_steps": args.table_steps, "block_size": block,
               "batch_size": batch, "hashed": [], "frequent": []}

    # 3a. Hashed Over-Encoding tables, zero-initialised.
    for m in moduli:
        loss = _table_run(work / f"hashed_m{m}", "configs/wikitext_gpt2_oe.yaml", data,
                          [*common, "--model.over_encoding.modulus", str(m),
                           "--model.over_encoding.table_lr", str(args.hashed_table_lr)])
        results["hashed"].append({"rows": m, "val_loss": loss})
        print(f"hashed m={m}: val loss {loss:.4f}")

    # 3b. Frequent n-gram rows, mined from the training text.
    mined = work / "mined.jsonl"
    if top_ks:
        mine_main(["--train_file", data["data_files"]["train"], "--tokenizer", str(gpt2),
                   "--cache_dir", data["cache_dir"], "--num_workers", "0", "--orders", "2,3",
                   "--top_k", str(max(top_ks)), "--capacity", str(max(4 * max(top_ks), 10**6)),
                   "--out", str(mined)])
    for k in top_ks:
        loss = _table_run(work / f"frequent_k{k}", "configs/wikitext_gpt2_frequent.yaml", data,
                          [*common, "--model.frequent_ngrams.path", str(mined),
                           "--model.frequent_ngrams.top_k", str(k),
                           "--model.frequent_ngrams.table_lr", str(args.frequent_table_lr)])
        results["frequent"].append({"rows": k, "val_loss": loss})
        print(f"frequent K={k}: val loss {loss:.4f}")

    results["seconds"] = time.time() - started
    for kind in ("hashed", "frequent"):
        runs = results[kind]
        if len(runs) >= 2:  # least-squares slope of loss against log10(rows)
            fit = fit_log_linear([r["rows"] for r in runs], [r["val_loss"] for r in runs])
            results[f"{kind}_slope_per_decade"] = fit.slope
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    plot(results, Path(args.png))
    print(f"wrote {args.png} and {args.json} ({results['seconds']:.0f} s)")
    return 0

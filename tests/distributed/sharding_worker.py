"""Runs the sharding scenarios of tests/distributed/test_parallelize_two_ranks.py on 1 or 2 ranks.

    torchrun --standalone --nproc_per_node=W tests/distributed/sharding_worker.py OUT SCENARIO[=ARG,...] ...

Every rank runs Lightning (``devices=W``, ShardedTableStrategy over gloo) on a tiny Over-Encoding
model; rank 0 writes what the test compares under OUT.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from oe.models.embedding import OverEncodingConfig  # noqa: E402
from oe.training.lm import LanguageModel, OptimizerConfig  # noqa: E402
from oe.distributed.parallelize import local_shard, row_split  # noqa: E402
from oe.training.strategy import ShardedTableStrategy  # noqa: E402
from tests.conftest import FirstGradients, tiny_language_model  # noqa: E402

VOCAB = 11
GLOBAL_BATCH = 8
LENGTH = 12  # tokens per row (+1 for the targets)
STEPS_PER_EPOCH = 2


def make_model(modulus: int = 101, optimizer: str = "rowwise_adagrad") -> LanguageModel:
    L.seed_everything(0, verbose=False)
    tables = OverEncodingConfig(orders=[2, 3], k=2, modulus=modulus, table_lr=0.5,
                                table_optimizer=optimizer)
    return tiny_language_model(VOCAB, tables, optimizer=OptimizerConfig(lr=1e-2, warmup_steps=0))


def global_batches() -> torch.Tensor:
    """[steps, global batch, LENGTH + 1] token ids without padding, so every row counts equally."""
    generator = torch.Generator().manual_seed(7)
    return torch.randint(1, VOCAB, (STEPS_PER_EPOCH, GLOBAL_BATCH, LENGTH + 1), generator=generator)


def probe_tokens() -> torch.Tensor:
    return torch.randint(1, VOCAB, (3, LENGTH), generator=torch.Generator().manual_seed(11))


class RankSlices(Dataset):
    """Global batch i, cut into equal row slices: rank r reads slice r, in micro-batches of
    ``micro_batch_rows`` rows (None: the whole slice in one pass)."""

    def __init__(self, rank: int, world: int, micro_batch_rows: int | None = None) -> None:
        self.batches, self.rank, self.world = global_batches(), rank, world
        self.micro_batch_rows = micro_batch_rows

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict:
        rows = GLOBAL_BATCH // self.world
        return {"input_ids": self.batches[i, self.rank * rows:(self.rank + 1) * rows],
                "micro_batch_rows": self.micro_batch_rows}


class Record(L.Callback):
    """Probe logits before training and the loss of every step."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.probe: torch.Tensor | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.probe = probe_logits(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


@torch.no_grad()
def probe_logits(model: LanguageModel) -> torch.Tensor:
    was_training = model.training
    model.eval()
    logits = model(probe_tokens())
    model.train(was_training)
    return logits


# The GPU tier (tests/gpu) runs the same scenarios on CUDA over NCCL.
ACCELERATOR = os.environ.get("OE_TEST_ACCELERATOR", "cpu")


def trainer(world: int, max_epochs: int, callbacks: list, **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator=ACCELERATOR, devices=world,
        strategy=ShardedTableStrategy(process_group_backend="nccl" if ACCELERATOR == "cuda"
                                      else "gloo"),
        max_epochs=max_epochs, logger=False, enable_checkpointing=bool(kwargs.pop("checkpoint", 0)),
        enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
        num_sanity_val_steps=0, callbacks=callbacks, **kwargs,
    )


def loader(world: int, micro_batch_rows: int | None = None) -> DataLoader:
    rank = int(os.environ.get("RANK", 0))
    return DataLoader(RankSlices(rank, world, micro_batch_rows), batch_size=None)


def micro(out: Path, world: int) -> None:
    """One step on batch 0 with each rank's rows in micro-batches of one row, a checkpoint."""
    t = trainer(world, max_epochs=1, callbacks=[], max_steps=1)
    t.fit(make_model(), loader(world, micro_batch_rows=1))
    t.save_checkpoint(out / f"micro_w{world}.ckpt")


def sgd(out: Path, world: int) -> None:
    """One step with fused SGD tables (an update linear in the gradient, so a wrong scale of
    the tables' gradient shows) and the dense gradients, micro-batches of one row each."""
    gradients = FirstGradients()  # DDP-averaged over the ranks
    t = trainer(world, max_epochs=1, callbacks=[gradients], max_steps=1)
    t.fit(make_model(optimizer="sgd"), loader(world, micro_batch_rows=1))
    t.save_checkpoint(out / f"sgd_w{world}.ckpt")
    if t.is_global_zero:
        torch.save(gradients.grads, out / f"sgd_grads_w{world}.pt")


def step(out: Path, world: int) -> None:
    """Probe logits of the sharded model, rows per rank, one step on batch 0, a checkpoint."""
    model = make_model()
    record = Record()
    t = trainer(world, max_epochs=1, callbacks=[record], max_steps=1)
    t.fit(model, loader(world))
    rows = {tb.name: local_shard(model.model.embedding.ngram, tb.name).shape[0]
            for tb in model.model.embedding.tables}
    t.save_checkpoint(out / f"step_w{world}.ckpt")
    after = probe_logits(model)
    if t.is_global_zero:
        torch.save({"before": record.probe, "after": after}, out / f"step_w{world}.pt")
    (out / f"rows_w{world}_rank{t.global_rank}.json").write_text(json.dumps(rows))


def reload(out: Path, world: int, ckpt: str, name: str) -> None:
    """Load ``ckpt`` on ``world`` ranks through fit, save it again, and probe the logits."""
    model = make_model()
    t = trainer(world, max_epochs=1, callbacks=[], max_steps=1)
    t.fit(model, loader(world), ckpt_path=ckpt)
    t.save_checkpoint(out / f"{name}.ckpt")
    logits = probe_logits(model)
    if t.is_global_zero:
        torch.save({"after": logits}, out / f"{name}.pt")


def resume(out: Path, world: int) -> None:
    """Two epochs straight, and the same run resumed from its checkpoint after epoch one."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    straight = Record()
    ckpt = ModelCheckpoint(dirpath=out / "resume", every_n_train_steps=STEPS_PER_EPOCH,
                           save_top_k=-1, filename="{step}")
    trainer(world, 2, [straight, ckpt], checkpoint=1).fit(make_model(), loader(world))
    resumed = Record()
    trainer(world, 2, [resumed]).fit(make_model(), loader(world),
                                     ckpt_path=str(out / "resume" / f"step={STEPS_PER_EPOCH}.ckpt"))
    if int(os.environ.get("RANK", 0)) == 0:
        (out / "resume.json").write_text(json.dumps({"straight": straight.losses,
                                                     "resumed": resumed.losses}))


def bad(out: Path, world: int, ckpt: str) -> None:
    """Loading a checkpoint of other tables fails with one error and changes nothing."""
    model = make_model(modulus=103)
    t = trainer(world, max_epochs=1, callbacks=[], max_steps=2)
    t.fit(model, loader(world))  # train it, so that a silent overwrite would show
    before = {k: v.clone() for k, v in model.model.state_dict().items()
              if not k.startswith("embedding.ngram.")}
    rows_before = local_shard(model.model.embedding.ngram, "ngram2_0").clone()
    try:
        trainer(world, 1, [], max_steps=3).fit(model, loader(world), ckpt_path=ckpt)
        message = None
    except ValueError as err:
        message = str(err)
    unchanged = all(torch.equal(v, model.model.state_dict()[k]) for k, v in before.items())
    unchanged &= torch.equal(rows_before, local_shard(model.model.embedding.ngram, "ngram2_0"))
    try:
        trainer(world, 1, [], max_steps=1).fit(make_model(optimizer="adam"), loader(world))
        adam = None
    except ValueError as err:
        adam = str(err)
    (out / "bad.json").write_text(json.dumps({"message": message, "unchanged": unchanged,
                                              "adam": adam, "split": row_split(101, world)}))


def main() -> None:
    torch.set_num_threads(1)  # the same kernels on 1 and 2 ranks: identical logits
    out = Path(sys.argv[1])
    world = int(os.environ.get("WORLD_SIZE", 1))
    for spec in sys.argv[2:]:  # scenario[=arg,arg], run in order
        scenario, _, args = spec.partition("=")
        args = args.split(",") if args else []
        scenarios = {"step": step, "micro": micro, "reload": reload, "resume": resume,
                     "bad": bad, "sgd": sgd}
        scenarios[scenario](out, world, *args)


if __name__ == "__main__":
    main()

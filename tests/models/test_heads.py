"""Over-Decoding heads and MTP-DS: exact baseline at zero weight, hand-computed losses, and
generation that never sees the extra heads."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from oe.models.build import build_arguments, build_model
from oe.models.config import ModelConfig
from oe.models.embedding import OverEncodingConfig
from oe.models.heads import OutputHeads, OutputHeadsConfig, check_heads, total_loss
from oe.models.losses import IGNORE_INDEX, summed_cross_entropy
from oe.training.lm import LanguageModel
from oe.models.decoding import sample_from_bos
from oe.models.gpt import BackboneConfig

ROOT = Path(__file__).resolve().parents[2]
TINY = BackboneConfig(n_layer=2, n_head=2, n_embd=16, block_size=64)
OE = OverEncodingConfig(orders=[2, 3], modulus=1009)
PAD, BOS, EOS = 0, 4, 5

# Rows of the CFG data: BOS, symbols, EOS, then padding; the last row has no padding.
BATCH = torch.tensor([
    [BOS, 1, 2, 3, 1, EOS, PAD, PAD, PAD, PAD],
    [BOS, 2, 2, 1, 1, 3, 2, 1, EOS, PAD],
    [BOS, 3, 1, 2, 1, 1, 2, 3, 1, EOS],
])


def model_pair(over_encoding: OverEncodingConfig | None, heads: OutputHeadsConfig,
               seed: int = 0) -> tuple[LanguageModel, LanguageModel]:
    """A model without heads and one with them, sharing every weight of the main path."""
    torch.manual_seed(seed)
    plain = LanguageModel(vocab_size=6, pad_id=PAD, backbone=TINY, over_encoding=over_encoding)
    torch.manual_seed(seed + 1)
    with_heads = LanguageModel(vocab_size=6, pad_id=PAD, backbone=TINY, over_encoding=over_encoding,
                               heads=heads)
    missing, unexpected = with_heads.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("heads.") for k in missing)
    return plain, with_heads


def objective(model: LanguageModel, batch: dict) -> torch.Tensor:
    """The training objective exactly as ``training_step`` forms it."""
    loss_sum, n_tokens, extra = model._loss(batch)
    return total_loss(loss_sum / max(n_tokens, 1), extra)


@pytest.mark.parametrize("over_encoding", [None, OE], ids=["baseline", "oe3"])
def test_zero_weights_equal_the_baseline_exactly(over_encoding):
    heads = OutputHeadsConfig(od_offsets=[2, 3], lambdas=[0.0, 0.0], low_rank=8, mtp=True,
                              mtp_weight=0.0)
    plain, with_heads = model_pair(over_encoding, heads)
    batch = {"input_ids": BATCH}
    loss_plain, loss_heads = objective(plain, batch), objective(with_heads, batch)
    assert torch.equal(loss_plain, loss_heads)
    loss_plain.backward()
    loss_heads.backward()
    grads = dict(with_heads.named_parameters())
    compared = 0
    for name, p in plain.named_parameters():
        if p.grad is None:
            continue
        assert torch.equal(p.grad, grads[name].grad), name
        compared += 1
    assert compared >= 10
    # The heads are computed (and logged) even at weight 0, only their weight is 0.
    assert len(with_heads._loss(batch)[2]) == 3


def test_nonzero_weights_change_the_gradient_but_not_the_next_token_loss():
    heads = OutputHeadsConfig(od_offsets=[2], lambdas=[0.5], mtp=True, mtp_weight=0.1)
    plain, with_heads = model_pair(OE, heads)
    batch = {"input_ids": BATCH}
    # Evaluation (val/loss) reads the next-token head alone.
    assert torch.equal(plain._loss(batch)[0], with_heads._loss(batch)[0])
    objective(plain, batch).backward()
    objective(with_heads, batch).backward()
    w = "model.blocks.0.mlp.up.weight"
    assert not torch.allclose(plain.get_parameter(w).grad, with_heads.get_parameter(w).grad)


def reference_od(model: LanguageModel, ids: torch.Tensor, offset: int,
                 doc_ids: torch.Tensor | None = None) -> tuple[float, int]:
    """Head ``offset``'s summed CE and count, one position at a time."""
    hidden = model.model.hidden(model.model.embedding(ids[:, :-1]))
    head = model.heads.od[str(offset)]
    total, count = 0.0, 0
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1] - 1):
            if t + offset >= ids.shape[1]:
                continue  # past the end of the row: no such target
            target = int(ids[b, t + offset])
            if target == PAD:
                continue
            if doc_ids is not None and doc_ids[b, t + offset] != doc_ids[b, t]:
                continue
            h = hidden[b, t]
            if head.down is not None:
                h = head.down.weight @ h
            logits = head.out.weight @ h
            total += float(-F.log_softmax(logits, -1)[target])
            count += 1
    return total, count


def reference_mtp(model: LanguageModel, ids: torch.Tensor,
                  doc_ids: torch.Tensor | None = None) -> tuple[float, int]:
    """MTP-DS's summed CE and count, each position from its own prefix."""
    gpt, mtp = model.model, model.heads.mtp
    embedded = gpt.embedding(ids[:, :-1])
    hidden = gpt.hidden(embedded)

    def rms(x, weight):
        return x / torch.sqrt((x * x).mean() + torch.finfo(x.dtype).eps) * weight

    total, count = 0.0, 0
    for b in range(ids.shape[0]):
        combined = [
            mtp.project.weight @ torch.cat([rms(hidden[b, t], mtp.hidden_norm.weight),
                                            rms(embedded[b, t + 1], mtp.embedding_norm.weight)])
            for t in range(ids.shape[1] - 2)
        ]
        for t in range(ids.shape[1] - 2):
            target = int(ids[b, t + 2])
            if target == PAD or (doc_ids is not None and doc_ids[b, t + 2] != doc_ids[b, t]):
                continue
            prefix = torch.stack(combined[: t + 1])[None]
            out = mtp.final_norm(mtp.block(prefix))[0, -1]
            logits = gpt.embedding.token.weight @ out  # the shared (tied) output head
            total += float(-F.log_softmax(logits, -1)[target])
            count += 1
    return total, count


@pytest.mark.parametrize("low_rank", [None, 4])
def test_extra_losses_equal_a_hand_computed_reference(low_rank):
    torch.manual_seed(3)
    heads = OutputHeadsConfig(od_offsets=[2, 3], lambdas=[1.0, 0.5], low_rank=low_rank, mtp=True)
    model = LanguageModel(vocab_size=6, pad_id=PAD, backbone=TINY, over_encoding=OE, heads=heads)
    with torch.no_grad():
        extra = {h.name: h for h in model._loss({"input_ids": BATCH})[2]}
        for j in (2, 3):
            loss_sum, count = reference_od(model, BATCH, j)
            assert extra[f"od{j}"].count == count
            assert math.isclose(float(extra[f"od{j}"].loss_sum), loss_sum, rel_tol=1e-5)
        loss_sum, count = reference_mtp(model, BATCH)
        assert extra["mtp"].count == count
        assert math.isclose(float(extra["mtp"].loss_sum), loss_sum, rel_tol=1e-5)
    # Counted targets by hand: the rows hold 5, 8 and 9 real tokens after BOS.
    assert extra["od2"].count == (5 - 1) + (8 - 1) + (9 - 1)
    assert extra["od3"].count == (5 - 2) + (8 - 2) + (9 - 2)
    assert extra["mtp"].count == extra["od2"].count
    assert [h.weight for h in extra.values()] == [1.0, 0.5, 0.1]


def test_targets_never_cross_a_document_boundary():
    torch.manual_seed(4)
    heads = OutputHeadsConfig(od_offsets=[2, 3], lambdas=[1.0, 1.0], mtp=True)
    model = LanguageModel(vocab_size=6, pad_id=PAD, backbone=TINY, heads=heads)
    # Two documents packed in one row, then padding.
    ids = torch.tensor([[BOS, 1, 2, EOS, BOS, 3, 3, 1, EOS, PAD]])
    doc_ids = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        extra = {h.name: h for h in model._loss({"input_ids": ids, "doc_ids": doc_ids})[2]}
        for j in (2, 3):
            loss_sum, count = reference_od(model, ids, j, doc_ids)
            assert extra[f"od{j}"].count == count
            assert math.isclose(float(extra[f"od{j}"].loss_sum), loss_sum, rel_tol=1e-5)
        assert extra["mtp"].count == reference_mtp(model, ids, doc_ids)[1]
    # Offset 2: document 0 gives 2 targets (t=0,1), document 1 gives 3 (t=4,5,6).
    assert extra["od2"].count == 5


def test_more_padding_changes_no_loss():
    torch.manual_seed(5)
    heads = OutputHeadsConfig(od_offsets=[2, 3], lambdas=[1.0, 1.0], mtp=True)
    model = LanguageModel(vocab_size=6, pad_id=PAD, backbone=TINY, over_encoding=OE, heads=heads)
    padded = torch.cat([BATCH, torch.zeros(3, 6, dtype=torch.long)], dim=1)
    with torch.no_grad():
        a, b = model._loss({"input_ids": BATCH}), model._loss({"input_ids": padded})
    assert a[1] == b[1] and torch.allclose(a[0], b[0], rtol=1e-5)
    for x, y in zip(a[2], b[2]):
        assert x.count == y.count and torch.allclose(x.loss_sum, y.loss_sum, rtol=1e-5)


@pytest.mark.parametrize("over_encoding", [None, OE], ids=["od3", "ot3"])
def test_generation_is_unchanged_by_the_heads(over_encoding):
    heads = OutputHeadsConfig(od_offsets=[2, 3], lambdas=[1.0, 1.0], low_rank=8, mtp=True)
    plain, with_heads = model_pair(over_encoding, heads)
    # The generation callback samples from ``.model``, which holds no parameter of the heads.
    head_params = {id(p) for p in with_heads.heads.parameters()}
    assert head_params and not head_params & {id(p) for p in with_heads.model.parameters()}
    outputs = []
    for model in (plain, with_heads):
        generator = torch.Generator().manual_seed(11)
        outputs.append(sample_from_bos(model.model, 8, BOS, EOS, 40, generator))
    assert torch.equal(outputs[0][0], outputs[1][0])
    assert torch.equal(outputs[0][1], outputs[1][1])


@pytest.mark.parametrize("bad, field", [
    (dict(od_offsets=[2, 3], lambdas=[1.0]), "lambdas"),
    (dict(od_offsets=[1], lambdas=[1.0]), "od_offsets"),
    (dict(od_offsets=[2, 2], lambdas=[1.0, 1.0]), "od_offsets"),
    (dict(od_offsets=[2], lambdas=[1.5]), "lambdas"),
    (dict(od_offsets=[2], lambdas=[1.0], low_rank=0), "low_rank"),
    (dict(mtp=True, mtp_weight=-0.1), "mtp_weight"),
])
def test_bad_config_names_the_field(bad, field):
    with pytest.raises(ValueError, match=f"model.heads.{field}"):
        check_heads(OutputHeadsConfig(**bad))
    with pytest.raises(ValueError, match=f"model.heads.{field}"):
        ModelConfig(backbone=TINY, heads=OutputHeadsConfig(**bad))


@pytest.mark.parametrize("name, kind, width", [
    ("cfg_od3", "baseline+od3", 128), ("cfg_od3_85m", "baseline+od3", 768),
    ("cfg_ot3", "oe123+mtp", 128), ("cfg_ot3_85m", "oe123+mtp", 768),
])
def test_configs_build_the_model_they_name(name, kind, width):
    from oe.cli.config import model_section, parse_fit_config

    config = parse_fit_config(["--config", str(ROOT / "configs" / f"{name}.yaml")])
    arguments = build_arguments({**model_section(config), "vocab_size": 6, "pad_id": PAD})
    with torch.device("meta"):
        built = build_model(**arguments)
    assert ModelConfig(**arguments).kind == kind
    assert built.heads is not None and built.backbone.n_embd == width


def test_summed_cross_entropy_counts_only_real_targets_in_float32():
    logits = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    targets = torch.tensor([[1, IGNORE_INDEX, 4], [0, 2, IGNORE_INDEX]])
    loss_sum, count = summed_cross_entropy(logits, targets)
    assert count == 4 and loss_sum.dtype == torch.float32
    counted = [(0, 0), (0, 2), (1, 0), (1, 1)]
    expected = sum(-torch.log_softmax(logits[b, t].float(), -1)[targets[b, t]] for b, t in counted)
    torch.testing.assert_close(loss_sum, expected)

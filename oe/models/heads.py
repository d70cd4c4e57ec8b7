"""Extra output heads used only in training: Over-Decoding (OD) and DeepSeek-V3-style MTP.

Both add losses for tokens further ahead than the next one; neither is used to generate, so a
model with them samples exactly like the same main path without them.

OD (the paper's appendix): head j (j >= 2) reads the final hidden state at position t and
predicts token t+j, through an optional low-rank map Linear(D, d) before Linear(d, V).
Decomposing an n-gram output into independent per-position heads makes its cross-entropy the sum
of the heads' cross-entropies, hence the weights lambda_j <= 1 of

    loss = CE_1 + sum_j lambda_j CE_j

MTP-DS (DeepSeek-V3, one module): at position t, normalise the final hidden state h_t and the
input embedding of token t+1 (the model's own, Over-Encoding included), concatenate, project
2D -> D, run one causal transformer block and a final norm, and score token t+2 with the shared
output head. Its loss enters with weight ``mtp_weight`` (0.1 by default).

Every CE is a mean over its own counted targets: padding is never counted, a target past the end
of the row does not exist, and with document ids a target in another document than position t
is not counted (the hidden state at t has seen nothing of that document).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch
from torch import nn

from oe.models.attention import DocumentMask
from oe.models.gpt import BackboneConfig, Block, init_gpt2_blocks
from oe.models.losses import IGNORE_INDEX, summed_cross_entropy


@dataclass
class OutputHeadsConfig:
    """Training-only output heads.

    Args:
        od_offsets: OD heads, by how far ahead each predicts (each >= 2, e.g. [2, 3] for OD-3).
        lambdas: loss weight of each OD head, in [0, 1], one per entry of ``od_offsets``.
        low_rank: width d of the low-rank map Linear(D, d) before Linear(d, V); None: Linear(D, V).
        mtp: add the DeepSeek-V3-style module that predicts token t+2.
        mtp_weight: its loss weight, in [0, 1].
        mtp_norm: the norm applied to the hidden state and the embedding before concatenation.
    """

    od_offsets: list[int] = field(default_factory=list)
    lambdas: list[float] = field(default_factory=list)
    low_rank: int | None = None
    mtp: bool = False
    mtp_weight: float = 0.1
    mtp_norm: Literal["rms", "layer"] = "rms"

    @property
    def empty(self) -> bool:
        return not self.od_offsets and not self.mtp

    @property
    def kind(self) -> str:
        """A short name: ``od3`` for offsets up to 3, ``mtp`` for the MTP module."""
        parts = [f"od{max(self.od_offsets)}"] if self.od_offsets else []
        return "+".join(parts + (["mtp"] if self.mtp else []))


def check_heads(config: OutputHeadsConfig) -> None:
    """The first bad field of ``model.heads``, as one ValueError naming it (``ModelConfig``'s check)."""
    offsets, lambdas = list(config.od_offsets), list(config.lambdas)
    if len(lambdas) != len(offsets):
        raise ValueError(
            f"model.heads.lambdas has {len(lambdas)} entries but model.heads.od_offsets has "
            f"{len(offsets)}: give one weight per OD head"
        )
    if any(j < 2 for j in offsets):
        raise ValueError(
            f"model.heads.od_offsets must all be >= 2 (offset 1 is the next-token head), "
            f"got {offsets}"
        )
    if len(set(offsets)) != len(offsets):
        raise ValueError(f"model.heads.od_offsets repeats an offset: {offsets}")
    if any(not 0.0 <= w <= 1.0 for w in lambdas):
        raise ValueError(f"model.heads.lambdas must each be in [0, 1], got {lambdas}")
    if config.low_rank is not None and config.low_rank < 1:
        raise ValueError(f"model.heads.low_rank must be >= 1 or null, got {config.low_rank}")
    if not 0.0 <= config.mtp_weight <= 1.0:
        raise ValueError(f"model.heads.mtp_weight must be in [0, 1], got {config.mtp_weight}")
    if config.mtp_norm not in ("rms", "layer"):
        raise ValueError(f"model.heads.mtp_norm must be 'rms' or 'layer', got {config.mtp_norm!r}")


class HeadLoss(NamedTuple):
    """One extra head's summed cross-entropy, its number of counted targets (a tensor, or 0 for
    a head with no target) and its weight."""

    name: str
    loss_sum: torch.Tensor
    count: torch.Tensor | int
    weight: float

    @property
    def mean(self) -> torch.Tensor:
        # An empty head (every target padding) contributes 0, not 0/0.
        return self.loss_sum / torch.as_tensor(self.count).clamp(min=1)


def total_loss(next_token: torch.Tensor, extra: list[HeadLoss]) -> torch.Tensor:
    """The training objective CE_1 + sum_j weight_j CE_j from the mean next-token loss."""
    for head in extra:
        next_token = next_token + head.weight * head.mean
    return next_token


def shifted_targets(ids: torch.Tensor, offset: int, pad_id: int,
                    doc_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Targets [B, T+1-offset] of a head that predicts ``offset`` tokens ahead.

    ``ids`` [B, T+1] is the whole batch row (inputs are ``ids[:, :-1]``); entry t is
    ``ids[:, t + offset]``, or IGNORE_INDEX where that is padding or lies in another document.
    """
    targets = ids[:, offset:]
    ignore = targets == pad_id
    if doc_ids is not None:
        ignore |= doc_ids[:, offset:] != doc_ids[:, : doc_ids.shape[1] - offset]
    return targets.masked_fill(ignore, IGNORE_INDEX)


class OverDecodingHead(nn.Module):
    """Scores token t+offset from the hidden state at t: [Linear(D, d)] then Linear(d, V)."""

    def __init__(self, dim: int, vocab_size: int, low_rank: int | None) -> None:
        super().__init__()
        self.down = None if low_rank is None else nn.Linear(dim, low_rank, bias=False)
        self.out = nn.Linear(dim if low_rank is None else low_rank, vocab_size, bias=False)
        for p in self.parameters():
            nn.init.normal_(p, std=0.02)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.out(hidden if self.down is None else self.down(hidden))


class MultiTokenPrediction(nn.Module):
    """DeepSeek-V3's MTP module of depth 1: (h_t, emb(x_{t+1})) -> representation for t+2."""

    def __init__(self, backbone: BackboneConfig, norm: Literal["rms", "layer"] = "rms") -> None:
        super().__init__()
        dim = backbone.n_embd

        def make_norm() -> nn.Module:
            return nn.RMSNorm(dim) if norm == "rms" else nn.LayerNorm(dim, bias=backbone.bias)

        self.hidden_norm = make_norm()
        self.embedding_norm = make_norm()
        self.project = nn.Linear(2 * dim, dim, bias=False)
        self.block = Block(backbone)
        self.final_norm = nn.LayerNorm(dim, bias=backbone.bias)
        # GPT-2's initialisation, as the backbone's blocks: its block counts as one layer more.
        nn.init.normal_(self.project.weight, std=0.02)
        init_gpt2_blocks(self.block, backbone.n_layer + 1)

    def forward(self, hidden: torch.Tensor, next_embedding: torch.Tensor,
                documents: DocumentMask | None = None) -> torch.Tensor:
        """Hidden states [B, L, D] at t and input embeddings [B, L, D] of t+1 -> [B, L, D]."""
        x = torch.cat([self.hidden_norm(hidden), self.embedding_norm(next_embedding)], dim=-1)
        return self.final_norm(self.block(self.project(x), documents=documents))


class OutputHeads(nn.Module):
    """The OD heads and the MTP module of one model, and their losses."""

    # The MTP block's path inside documents (oe.models.attention); None: the device's default.
    document_attention = None

    def __init__(self, config: OutputHeadsConfig, backbone: BackboneConfig,
                 vocab_size: int, pad_id: int = 0) -> None:
        super().__init__()  # ``config`` checked by ModelConfig (oe.models.config)
        self.config = config
        self.pad_id = pad_id
        self.od = nn.ModuleDict({
            str(j): OverDecodingHead(backbone.n_embd, vocab_size, config.low_rank)
            for j in config.od_offsets
        })
        self.mtp = MultiTokenPrediction(backbone, config.mtp_norm) if config.mtp else None

    def losses(
        self,
        hidden: torch.Tensor,
        embedded: torch.Tensor,
        ids: torch.Tensor,
        output_head: Callable[[torch.Tensor], torch.Tensor],
        doc_ids: torch.Tensor | None = None,
        isolate_documents: bool = False,
    ) -> list[HeadLoss]:
        """The extra losses of one batch.

        Args:
            hidden: final hidden states [B, T, D] of the inputs ``ids[:, :-1]``.
            embedded: the model's input embeddings [B, T, D] of the same inputs.
            ids: the batch rows [B, T+1].
            output_head: the model's shared next-token head (hidden -> logits).
            doc_ids: document ids [B, T+1] of ``ids``, or None.
            isolate_documents: packed rows of separate documents: the MTP block attends
                inside each document, as the backbone does.
        """
        length = hidden.shape[1]
        out = []
        for j, weight in zip(self.config.od_offsets, self.config.lambdas):
            if j > length:  # rows too short: no position has a token j ahead
                out.append(HeadLoss(f"od{j}", hidden.new_zeros(()), 0, weight))
                continue
            targets = shifted_targets(ids, j, self.pad_id, doc_ids)
            logits = self.od[str(j)](hidden[:, : length + 1 - j])
            out.append(HeadLoss(f"od{j}", *summed_cross_entropy(logits, targets), weight))
        if self.mtp is not None:
            if length < 2:
                out.append(HeadLoss("mtp", hidden.new_zeros(()), 0, self.config.mtp_weight))
            else:
                # Position t pairs h_t with the embedding at t+1 (the input token x_{t+1}).
                documents = (DocumentMask(doc_ids[:, : length - 1], self.document_attention)
                             if isolate_documents and doc_ids is not None else None)
                combined = self.mtp(hidden[:, :-1], embedded[:, 1:], documents)
                targets = shifted_targets(ids, 2, self.pad_id, doc_ids)
                loss_sum, count = summed_cross_entropy(output_head(combined), targets)
                out.append(HeadLoss("mtp", loss_sum, count, self.config.mtp_weight))
        return out

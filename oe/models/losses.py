"""The cross-entropy that every loss of a model is made of: the next-token head's and the extra heads'.

It returns a sum and a count rather than a mean, so that a mean can be taken over whatever the
caller counts (a batch, several ranks, one extra head). Targets equal to ``IGNORE_INDEX``
(padding, a position past the end of the row, a token of another document) are not counted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # the ``ignore_index`` default of F.cross_entropy


def summed_cross_entropy(logits: torch.Tensor,
                         targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of ``logits`` [..., V] against ``targets`` [...], summed over the counted
    targets (in float32 whatever the logits' dtype), and the number of counted targets (a tensor
    on the logits' device, so that a training step never waits for the host to read it)."""
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, (targets != IGNORE_INDEX).sum()

"""Causal attention inside the documents of packed rows.

A packed row holds several documents (for cfg3f: BOS sentence EOS, one after another), each token
tagged with its document's id. A query attends to the keys of its own document at or before its
position, never across a boundary, so a packed row computes what one row per document computes.

Three exact paths, chosen by device (``document_attention``):

- ``"flex"`` (CUDA): FlexAttention with a block mask; blocks outside every document are skipped,
  so the work is that of the documents themselves.
- ``"unpacked"`` (CPU): the documents, sorted by length, form a few groups of similar length;
  each group's queries, keys and values are scattered into a [documents, longest in the group]
  layout, attended with the causal kernel, and gathered back. The attention work is close to
  that of the documents themselves (less than the padded layout's, whose rows are all as long
  as the batch's longest); everything else in the model runs on packed tokens only.
- ``"dense"``: SDPA with a boolean [T, T] mask per row. Simple, and the reference of the tests,
  but it scores every pair of the row (no causal or document skipping).

Pad positions carry their own document id, so they attend only to pad and nothing attends to them.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from oe.models.compile import CountedCompile
from oe.models.cpu_attention import causal_attention_bf16

DocumentAttention = Literal["flex", "unpacked", "dense"]


def document_starts(doc_ids: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: True where a document begins (the row start included)."""
    starts = torch.ones_like(doc_ids, dtype=torch.bool)
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    return starts


def positions_in_documents(doc_ids: torch.Tensor) -> torch.Tensor:
    """[B, T] position of each token within its document (0 at each document's first token)."""
    index = torch.arange(doc_ids.shape[1], device=doc_ids.device).expand_as(doc_ids)
    first = torch.where(document_starts(doc_ids), index, torch.zeros_like(index)).cummax(dim=1).values
    return index - first


def default_document_attention(device: torch.device) -> DocumentAttention:
    if device.type == "cuda" and flex_available():
        return "flex"
    return "unpacked"


def flex_available() -> bool:
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


_compiled_flex: dict[str, CountedCompile] = {}


def _flex_attention(device: torch.device):
    # FlexAttention is fast only compiled. On CUDA it is compiled once with dynamic shapes for
    # every layer and packed width; the CPU's kernel template (torch 2.13) does not build with
    # dynamic shapes, so there each width compiles anew (the CPU's default path is "unpacked").
    from torch.nn.attention.flex_attention import flex_attention
    if torch.compiler.is_compiling():
        return flex_attention  # traced into the compiled blocks' own graph
    if device.type not in _compiled_flex:
        _compiled_flex[device.type] = CountedCompile(flex_attention, "FlexAttention",
                                                     dynamic=device.type == "cuda")
    return _compiled_flex[device.type]


class DocumentMask:
    """The document structure of a batch of packed rows, built once per forward pass."""

    def __init__(self, doc_ids: torch.Tensor, path: DocumentAttention | None = None) -> None:
        self.path = path or default_document_attention(doc_ids.device)
        if self.path not in ("flex", "unpacked", "dense"):
            raise ValueError(f"unknown document attention path {self.path!r}")
        self.doc_ids = doc_ids
        self.positions = positions_in_documents(doc_ids)
        batch, length = doc_ids.shape
        if self.path == "dense":
            same = doc_ids[:, :, None] == doc_ids[:, None, :]
            causal = torch.ones(length, length, dtype=torch.bool, device=doc_ids.device).tril()
            self.mask = (same & causal)[:, None]  # [B, 1, T, T]
        elif self.path == "unpacked":
            self._group_documents()
        else:
            from torch.nn.attention.flex_attention import create_block_mask

            def same_document_causal(b, h, q, kv):
                return (doc_ids[b, q] == doc_ids[b, kv]) & (q >= kv)

            self.block_mask = create_block_mask(same_document_causal, batch, None, length, length,
                                                device=doc_ids.device)

    def _group_documents(self, shrink: float = 0.9) -> None:
        # Documents sorted by length, longest first; a new group starts where a document is
        # shorter than `shrink` times its group's longest, which bounds the padding in a group.
        # 0.9 was the fastest of 0.75, 0.85 and 0.9 on a cfg3f batch of 64 (about 10 groups).
        document = document_starts(self.doc_ids).reshape(-1).long().cumsum(0) - 1
        lengths = torch.bincount(document).tolist()
        grouped: list[list[int]] = []
        for d in sorted(range(len(lengths)), key=lambda d: -lengths[d]):
            if not grouped or lengths[d] < shrink * lengths[grouped[-1][0]]:
                grouped.append([])
            grouped[-1].append(d)
        # Group g takes slots [offset, offset + documents * longest), one block per document.
        first_slot = torch.empty(len(lengths), dtype=torch.long)
        self.groups: list[tuple[int, int]] = []  # (documents, longest) per group
        offset = 0
        for docs in grouped:
            longest = lengths[docs[0]]
            first_slot[docs] = offset + longest * torch.arange(len(docs))
            self.groups.append((len(docs), longest))
            offset += len(docs) * longest
        self.slot_count = offset
        self.slots = first_slot.to(self.doc_ids.device)[document] + self.positions.reshape(-1)

    def attend(self, qkv: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
        """Attention [B, T, H * d] inside documents of queries, keys and values [B, T, 3, H, d]."""
        batch, length, _, heads, dim = qkv.shape
        if self.path != "unpacked":
            q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
            if self.path == "dense":
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, dropout_p=dropout)
            else:
                if dropout:
                    raise ValueError("model.backbone.dropout > 0 is not supported with packed "
                                     "rows on the flex attention path")
                y = _flex_attention(q.device)(q, k, v, block_mask=self.block_mask)
            return y.transpose(1, 2).reshape(batch, length, heads * dim)
        return self._attend_unpacked(qkv, dropout)

    # The groups are a per-batch Python list (their count and lengths change with every batch):
    # traced, each batch would be a new graph. Compiled blocks call it as an opaque function.
    @torch.compiler.disable
    def _attend_unpacked(self, qkv: torch.Tensor, dropout: float) -> torch.Tensor:
        batch, length, _, heads, dim = qkv.shape
        # One scatter of queries, keys and values together into the groups' slots.
        flat = qkv.reshape(batch * length, 3, heads, dim)
        # On the CPU, bf16 inputs (autocast) are attended by the chunked bf16 kernel
        # (oe.models.cpu_attention: about twice the fp32 flash kernel's speed on cfg3f's
        # sentences); everything else in fp32 by PyTorch's flash kernel, which is no faster in
        # bf16 at small head sizes (its backward is slower). The upcast rides on the scatter.
        bf16_kernel = flat.device.type == "cpu" and flat.dtype == torch.bfloat16 and not dropout
        compute = flat.dtype if bf16_kernel or flat.device.type != "cpu" else torch.float32
        spread = flat.new_zeros(self.slot_count, 3, heads, dim, dtype=compute).index_copy(
            0, self.slots, flat.to(compute))
        # split and unbind rather than slicing: their backward is one concatenation, where each
        # slice's backward would fill a zero tensor as large as all groups and add into it.
        groups = spread.split([documents * longest for documents, longest in self.groups])
        outputs = []
        with torch.autocast("cpu", enabled=False):
            for (documents, longest), group in zip(self.groups, groups):
                group = group.view(documents, longest, 3, heads, dim)
                q, k, v = (t.transpose(1, 2) for t in group.unbind(2))
                if bf16_kernel:
                    y = causal_attention_bf16(q, k, v)
                else:
                    y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
                outputs.append(y.transpose(1, 2).reshape(documents * longest, heads, dim))
        y = torch.cat(outputs).index_select(0, self.slots)
        return y.view(batch, length, heads * dim).to(qkv.dtype)

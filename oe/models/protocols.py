"""What a part of the model offers to code that does not know its class."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import nn


@runtime_checkable
class NgramTableEmbedding(Protocol):
    """An input embedding with n-gram tables, which train apart from the dense parameters.

    Implemented by ``OverEncoding`` (hashed tables) and ``FrequentNgramEmbedding`` (mined rows);
    the plain ``TokenEmbedding`` has none.
    """

    def table_parameters(self) -> list[nn.Parameter]:
        """The n-gram tables' weights (the 1-gram table and any projection excluded)."""
        ...

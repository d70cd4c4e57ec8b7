"""torch.compile for the model's hot paths, with dynamic shapes and a count of compilations.

Packed micro-batches change shape from step to step (rows cut to the batch's sentences, widths in
steps of 128, a last micro-batch with fewer rows). Compiled for fixed shapes, every new shape is a
new compilation, and past ``torch._dynamo.config.recompile_limit`` dynamo runs the code uncompiled
and slow. Compiled with dynamic shapes, a run needs a few compilations (the first shape, the first
change of a size, a single row, which dynamo specialises), however many shapes follow.
``COMPILE_BOUND`` states how many a run may need; past it, one warning says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)

# Graphs a compiled function may need over a whole run: the paper batch's micro-batch shapes
# compile 3 times (tests/models/test_compile.py); one more for a shape no test has seen.
COMPILE_BOUND = 4
# The compiler behind dynamo. Tests count compilations with "eager": the count is dynamo's.
COMPILE_BACKEND = "inductor"


class CountedCompile:
    """``fn`` compiled (with dynamic shapes unless told otherwise); ``compilations`` counts the
    graphs it compiled."""

    def __init__(self, fn: Callable, name: str, dynamic: bool = True) -> None:
        self.name = name
        self.compilations = 0
        self.compiled = torch.compile(fn, dynamic=dynamic, backend=self._backend)

    def _backend(self, graph: torch.fx.GraphModule, example_inputs: list) -> Callable:
        from torch._dynamo.backends.registry import lookup_backend

        self.compilations += 1
        if self.compilations == COMPILE_BOUND + 1:
            log.warning(
                "%s compiled %d times (expected at most %d): its input shapes keep changing, and "
                "past torch._dynamo.config.recompile_limit (%d) it runs uncompiled and slow; "
                "fixed rows (data.row_tokens) give every step one shape", self.name,
                self.compilations, COMPILE_BOUND, torch._dynamo.config.recompile_limit)
        return lookup_backend(COMPILE_BACKEND)(graph, example_inputs)

    def __call__(self, *args, **kwargs):
        return self.compiled(*args, **kwargs)

"""torch.compile for the model's hot paths, with dynamic shapes and a count of compilations.

Packed micro-batches change shape from step to step (rows cut to the batch's sentences, widths in
steps of 128, a last micro-batch with fewer rows). Compiled for fixed shapes, every new shape is a
new compilation, and past ``torch._dynamo.config.recompile_limit`` dynamo runs the code uncompiled
and slow. Compiled with dynamic shapes, a run needs a few compilations (the first shape, the first
change of a size, a single row, which dynamo specialises), however many shapes follow.
``COMPILE_BOUND`` states how many a run may need; past it, one warning says so.

Code that dynamo does not trace (the CPU's grouped document attention, whose groups are a Python
list that changes with every batch) splits the blocks into several graphs, one per stretch of
traced code; each stretch is compiled once per shape and reused by every block. The bound is per
stretch (dynamo's frame): how often the same code had to be compiled again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)

# Graphs one stretch of compiled code may need over a whole run: the paper batch's micro-batch
# shapes compile 3 times (tests/models/test_compile.py); one more for a shape no test has seen.
COMPILE_BOUND = 4
# The compiler behind dynamo. Tests count compilations with "eager": the count is dynamo's.
COMPILE_BACKEND = "inductor"


class CountedCompile:
    """``fn`` compiled (with dynamic shapes unless told otherwise); ``compilations`` counts the
    graphs it compiled, ``recompilations`` the most times one stretch of code was compiled."""

    def __init__(self, fn: Callable, name: str, dynamic: bool = True) -> None:
        self.name = name
        self.compilations = 0
        self.recompilations = 0
        self.compiled = torch.compile(fn, dynamic=dynamic, backend=self._backend)

    def _backend(self, graph: torch.fx.GraphModule, example_inputs: list) -> Callable:
        from torch._dynamo.backends.registry import lookup_backend
        from torch._guards import CompileContext

        self.compilations += 1
        compile_id = CompileContext.current_compile_id()
        times = 1 + (compile_id.frame_compile_id or 0) if compile_id is not None else self.compilations
        if times > self.recompilations:
            self.recompilations = times
            if times == COMPILE_BOUND + 1:
                log.warning(
                    "%s compiled %d times (expected at most %d): its input shapes keep changing, "
                    "and past torch._dynamo.config.recompile_limit (%d) it runs uncompiled and "
                    "slow; fixed rows (data.row_tokens) give every step one shape", self.name,
                    times, COMPILE_BOUND, torch._dynamo.config.recompile_limit)
        return lookup_backend(COMPILE_BACKEND)(graph, example_inputs)

    def __call__(self, *args, **kwargs):
        return self.compiled(*args, **kwargs)

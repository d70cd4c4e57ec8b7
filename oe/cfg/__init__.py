"""The cfg3f grammar: its rules, a sampler and an exact membership checker."""

from oe.cfg.checker import accepts, accepts_padded, parse_line
from oe.cfg.grammar import MAX_LENGTH, MIN_LENGTH, ROOT, RULES, TERMINALS
from oe.cfg.sampler import sample, sample_range

__all__ = [
    "MAX_LENGTH",
    "MIN_LENGTH",
    "ROOT",
    "RULES",
    "TERMINALS",
    "accepts",
    "accepts_padded",
    "parse_line",
    "sample",
    "sample_range",
]

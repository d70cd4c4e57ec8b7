"""Sharding the n-gram tables over ranks (parallelize), the checkpoint file format and its checks
(checkpoint), the tables' signature and state (table_state) and the single-device export (export).

No Lightning here: the strategy that saves and loads sharded tables, the atomic checkpoint writer
and the wiring of sharding into a fit live in ``oe.training``."""

"""Sharding the n-gram tables over ranks: the parallel plan, the Lightning strategy, table checkpoints and their export."""

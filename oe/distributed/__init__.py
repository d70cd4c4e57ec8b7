"""Sharding the n-gram tables over ranks (parallelize), their checkpoints, export and loading
for evaluation (checkpoint), and the Lightning strategy that saves and loads them (strategy)."""

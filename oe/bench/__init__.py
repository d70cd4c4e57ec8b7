"""Benchmarks: ``oe bench NAME [options]``; each prints a table and writes JSON."""

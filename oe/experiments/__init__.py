"""One-off experiments built on the library (not imported by it)."""

"""oe: Over-Encoding language models (hashed n-gram input tables) in PyTorch Lightning."""

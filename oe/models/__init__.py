"""The models: GPT-2 backbone, input embeddings (tokens, hashed n-gram tables, mined n-grams),
output heads, the n-gram id function, and ``build_model`` (build.py), which assembles them."""

"""Hugging Face format: export (``oe export --format hf``), the modelling code of exported n-gram
models (``oe.huggingface.modeling``) and loading an exported directory back (``oe.huggingface.load``)."""

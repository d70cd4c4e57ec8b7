"""A YAML file a tool is given, read with one error that names it when it is missing or is not
YAML (``oe fit --config``, ``oe sweep --sweep``)."""

from __future__ import annotations

from pathlib import Path

import yaml


def read_yaml(path: Path, shown: str, error: type[ValueError]) -> object:
    """The content of ``path``; ``error`` whose message starts with ``shown`` (how the tool
    names the file) when it cannot be read."""
    if not path.is_file():
        raise error(f"{shown}: no such file")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise error(f"{shown}: not valid YAML: {err}") from err

"""The distributed layer holds no Lightning: sharding, the checkpoint format, table state and export
import neither Lightning nor the training layer, directly or through the oe modules they import
(the strategy, the atomic checkpoint writer and the wiring are ``oe.training``'s)."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.test_import_cycles import ROOT, _runtime_nodes, import_graph, modules

LIGHTNING = ("lightning", "pytorch_lightning", "lightning_fabric")


def _imported_names(path) -> set[str]:
    """Every absolute module name ``path`` imports when run (function-level imports included)."""
    names = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
    return names


def _reachable(start: list[str]) -> set[str]:
    """The oe modules ``start`` import, directly or through each other, and ``start`` itself."""
    graph, seen, pending = import_graph(), set(), list(start)
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending += graph[name]
    return seen


def test_no_module_under_oe_distributed_imports_lightning_or_training():
    known = modules()
    distributed = [name for name in known if name.split(".")[:2] == ["oe", "distributed"]]
    assert {"oe.distributed.checkpoint", "oe.distributed.parallelize"} <= set(distributed)
    offending = {}
    for name in sorted(_reachable(distributed)):
        bad = sorted(n for n in _imported_names(known[name])
                     if n.split(".")[0] in LIGHTNING or n.startswith(("oe.training", "oe.cli")))
        if bad:
            offending[name] = bad
    assert offending == {}, f"the distributed layer reaches Lightning or training: {offending}"


def test_the_scan_sees_a_lightning_import(tmp_path):
    """The check above can fail: a module importing Lightning inside a function is caught."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from lightning.pytorch import Trainer\n    import oe.training.lm\n")
    assert {"lightning.pytorch", "oe.training.lm"} <= _imported_names(module)


def test_importing_the_distributed_layer_loads_no_lightning():
    probe = ("import sys, oe.distributed.checkpoint, oe.distributed.export, "
             "oe.distributed.parallelize, oe.distributed.table_state\n"
             f"print(sorted(m for m in sys.modules if m.split('.')[0] in {LIGHTNING!r} "
             "or m.startswith('oe.training')))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"

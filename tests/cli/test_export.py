"""oe export never touches what it reads: OUT onto its own source, a folder that is no export."""

from __future__ import annotations

from pathlib import Path

import pytest

from oe.cli.export import main as export_main
from tests.conftest import tiny_gpt2_dir
from tests.huggingface.conftest import save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("export")
    tokenizer = tiny_gpt2_dir(folder / "tokenizer")
    run = folder / "run" / "checkpoints"
    run.mkdir(parents=True)
    (run / "notes.txt").write_text("kept")
    return save_checkpoint(run / "last.ckpt", tokenizer / "tokenizer.json", None)


def _contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("format_", ["hf", "ckpt"])
def test_out_onto_the_checkpoint_or_its_folder_is_refused(checkpoint, format_, capsys) -> None:
    before = _contents(checkpoint.parent.parent)
    for out in (checkpoint.parent, checkpoint.parent.parent, checkpoint,
                Path(f"{checkpoint}.tables") / "x"):
        assert export_main(["--format", format_, "--overwrite", str(checkpoint), str(out)]) == 2
        error = _error(capsys)
        assert error.startswith(f"error: OUT {out} ") and "give another OUT" in error, error
    assert _contents(checkpoint.parent.parent) == before


def test_overwrite_replaces_only_what_an_export_wrote(checkpoint, tmp_path, capsys) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "table.csv").write_text("a,b\n")
    assert export_main(["--format", "ckpt", "--overwrite", str(checkpoint), str(folder)]) == 2
    assert _error(capsys) == (f"error: OUT {folder} is a folder; --format ckpt writes a file "
                              f"(such as {folder}/model.ckpt)")
    assert export_main(["--format", "hf", "--overwrite", str(checkpoint), str(folder)]) == 2
    assert "not an exported model (no config.json)" in _error(capsys)
    assert _contents(folder) == {"table.csv": b"a,b\n"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no .partial left
    # A previous export is replaced.
    out = tmp_path / "hf"
    assert export_main(["--format", "hf", str(checkpoint), str(out)]) == 0
    assert export_main(["--format", "hf", str(checkpoint), str(out)]) == 2
    assert _error(capsys) == f"error: {out} exists; pass --overwrite to replace it"
    assert export_main(["--format", "hf", "--overwrite", str(checkpoint), str(out)]) == 0
    assert (out / "config.json").is_file()

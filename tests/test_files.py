"""oe.files: a file is written whole or not at all."""

from __future__ import annotations

import pytest

from oe.files import temporary_name, write_atomically, write_text_atomically


def test_a_write_replaces_the_file_whole_and_leaves_nothing_beside_it(tmp_path):
    path = tmp_path / "new" / "folder" / "results.json"
    write_text_atomically(path, "first")
    write_atomically(path, lambda writing: writing.write_bytes(b"second"), durable=True)
    assert path.read_text() == "second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_partial_one(tmp_path):
    path = tmp_path / "finished.json"
    path.write_text("old")

    def half_then_fail(writing):
        writing.write_text("half of the new")
        assert writing == temporary_name(path) and writing.name.startswith(".")  # hidden
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(path, half_then_fail)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["finished.json"]

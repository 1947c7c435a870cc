"""vqswitch.atomic: a saved file is the old one or the whole new one, with ordinary permissions."""
from __future__ import annotations

import os
import stat

import pytest

from vqswitch.atomic import atomic_directory, atomic_path, atomic_write_bytes


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_new_files_get_the_permissions_open_would_give(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        with open(tmp_path / "plain.bin", "wb") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.bin").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "f.txt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_directory_replaces_files_and_keeps_others(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "keep.txt").write_text("keep")
    (d / "a.txt").write_text("old")
    with atomic_directory(d) as tmp:
        (tmp / "a.txt").write_text("new")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("b")
    assert (d / "a.txt").read_text() == "new" and (d / "keep.txt").read_text() == "keep"
    assert (d / "sub" / "b.txt").read_text() == "b"
    with pytest.raises(RuntimeError):
        with atomic_directory(d) as tmp:
            (tmp / "a.txt").write_text("newer")
            raise RuntimeError("interrupted")
    assert (d / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]

"""vqswitch._io: a saved file is the old one or the whole new one, with ordinary permissions."""
from __future__ import annotations

import os
import stat

import pytest

from vqswitch._io import atomic_directory, atomic_path, atomic_write_bytes


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


def test_files_written_into_an_atomic_directory_get_ordinary_permissions(tmp_path):
    import safetensors.torch
    import torch

    with atomic_directory(tmp_path / "model") as tmp:
        safetensors.torch.save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))  # safetensors makes 0600
        (tmp / "config.json").write_text("{}")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "model").iterdir()}
    assert modes["model.safetensors"] == modes["config.json"] == 0o666 & ~_umask(), modes


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_a_killed_run_are_cleaned_on_the_next(tmp_path):
    import socket

    from vqswitch._io import temp_prefix

    dead, alive = _dead_pid(), os.getpid()
    stale_dir = tmp_path / f"{temp_prefix('out', dead)}abc.tmp"
    stale_file = tmp_path / f"{temp_prefix('f.bin', dead)}xyz.tmp"
    live_dir = tmp_path / f"{temp_prefix('out', alive)}def.tmp"  # a run still going: kept
    other = tmp_path / ".out.someone-elses.tmp"  # not our naming: kept
    for d in (stale_dir, live_dir, other):
        d.mkdir()
        (d / "half.png").write_bytes(b"x")
    stale_file.write_bytes(b"half")
    assert socket.gethostname()  # the prefix names this host
    with atomic_directory(tmp_path / "out") as tmp:
        (tmp / "a.png").write_bytes(b"png")
    atomic_write_bytes(tmp_path / "f.bin", b"whole")
    assert not stale_dir.exists() and not stale_file.exists()
    assert live_dir.exists() and other.exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"]


def test_read_json_lines_keeps_objects_in_order_and_skips_torn_lines(tmp_path):
    from vqswitch._io import read_json_lines

    log = tmp_path / "metrics.jsonl"
    log.write_bytes(b'{"step": 1}\n[1, 2]\n{"step": 2, "loss": 0.5}\nnot json\n\xff\xfe\n{"step": 3, "lo')
    assert read_json_lines(log) == [{"step": 1}, {"step": 2, "loss": 0.5}]
    log.write_text("")
    assert read_json_lines(log) == []

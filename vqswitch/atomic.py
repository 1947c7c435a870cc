"""Atomic file writes: a file a user saved is either the old one or the whole new one, never half."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_directory"]


def _default_mode() -> int:
    """The permissions a new file gets from ``open()``: 0o666 minus the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, _default_mode())  # mkstemp makes 0600; a saved file gets what open() would give it
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success each file in it replaces its
    namesake in ``path`` by an atomic rename (other files in ``path`` are kept).

    Each file is atomic on its own; on failure nothing in ``path`` changes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        path.mkdir(exist_ok=True)  # only once the content exists: a failed first save leaves nothing
        for src in sorted(tmp.rglob("*")):
            if src.is_file():
                dst = path / src.relative_to(tmp)
                dst.parent.mkdir(parents=True, exist_ok=True)
                with open(src, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(src, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

"""The one home of vqswitch's file helpers (private): atomic writes, atomic folder replacement, JSON readers.

A file a user saved is either the old one or the whole new one, never half; a folder replaced with
:func:`atomic_replace_directory` is either the old folder or the whole new one.

Temporaries are made beside their target, named ``.<target name>.vqswitch-<host>-<pid>-<random>.tmp``. A process
killed mid-write leaves its temporary behind; the next atomic write to the same target removes those of its
name whose process (on this host) no longer runs. A saved file gets the permissions ``open()`` would give a new
file (``0o666`` less the umask), whatever wrote it (``mkstemp`` and safetensors make ``0o600``).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
import zlib
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_directory", "atomic_replace_directory",
           "recover_directory", "recover_directories", "temp_prefix", "fsync_tree", "read_json_object",
           "read_json_lines"]


def _default_mode() -> int:
    """The permissions a new file gets from ``open()``: 0o666 minus the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _host() -> str:
    return f"{zlib.crc32(socket.gethostname().encode('utf-8', 'replace')):08x}"


def temp_prefix(name: str, pid: int | None = None) -> str:
    """The name prefix of this process's (or ``pid``'s) temporaries for a target called ``name``."""
    return f".{name}.vqswitch-{_host()}-{os.getpid() if pid is None else pid}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # another user's process, or we cannot tell: keep its files
        return True
    return True


def _clean_stale(parent: Path, name: str) -> None:
    """Remove temporaries for ``name`` in ``parent`` left by dead processes of this host (best effort)."""
    pattern = re.compile(re.escape(f".{name}.vqswitch-{_host()}-") + r"(\d+)-[^/]*\.tmp")
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or _alive(int(match.group(1))):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced, given ``open()``'s permissions and
    renamed onto ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched. Stale temporaries of killed
    writers to ``path`` are removed first (module docstring).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, _default_mode())  # mkstemp makes 0600; a saved file gets what open() would give it
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
    namesake in ``path`` by an atomic rename (other files in ``path`` are kept), with the permissions
    ``open()`` gives a new file (whatever wrote it: safetensors makes 0600).

    Each file is atomic on its own; on failure nothing in ``path`` changes. Stale temporary folders of killed
    writers to ``path`` are removed first (module docstring).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(path.parent, path.name)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        path.mkdir(exist_ok=True)  # only once the content exists: a failed first save leaves nothing
        mode = _default_mode()
        for src in sorted(tmp.rglob("*")):
            if src.is_file() and not src.is_symlink():
                dst = path / src.relative_to(tmp)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(src, mode)
                with open(src, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(src, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_json(path: str | os.PathLike, value, *, indent: int | None = 2, sort_keys: bool = False) -> None:
    """Write ``value`` as UTF-8 JSON (and a final newline) to ``path`` atomically."""
    text = json.dumps(value, indent=indent, sort_keys=sort_keys)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def fsync_tree(folder: str | os.PathLike) -> None:
    """fsync every regular file under ``folder`` (before the folder is renamed into place)."""
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file() and not p.is_symlink():
            with open(p, "rb+") as f:
                os.fsync(f.fileno())


def _old_name(path: Path) -> Path:
    return path.parent / f".{path.name}.old"


def recover_directory(path: str | os.PathLike) -> None:
    """Finish or undo an :func:`atomic_replace_directory` of ``path`` that a killed process left half done.

    The previous folder moved aside (``.<name>.old``) is renamed back when ``path`` is missing (the kill came between
    the two renames), else removed; stale temporaries of dead writers are removed. Nothing else is touched.
    """
    path = Path(path)
    old = _old_name(path)
    if old.is_dir() and not old.is_symlink():
        if not path.exists():
            os.replace(old, path)
        else:
            shutil.rmtree(old, ignore_errors=True)
    _clean_stale(path.parent, path.name)


@contextlib.contextmanager
def atomic_replace_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it becomes ``path`` whole.

    Unlike :func:`atomic_directory` (which merges files into ``path``), files of the previous ``path`` that the new
    folder lacks are gone. The previous folder is renamed aside to ``.<name>.old``, the new one renamed in, then the
    old one removed; a crash between the renames is undone by :func:`recover_directory` (called first here). On an
    exception nothing changes and the temporary is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(path)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        mode = _default_mode()
        for p in tmp.rglob("*"):
            if p.is_file() and not p.is_symlink():
                os.chmod(p, mode)
        fsync_tree(tmp)
        if not path.exists():
            os.replace(tmp, path)
        else:
            old = _old_name(path)
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except OSError:
                os.replace(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_json_object(path: str | os.PathLike, what: str) -> dict:
    """The JSON object in the UTF-8 file ``path``.

    Raises:
        ValueError: the file is not UTF-8 JSON, or holds something other than an object (the message names
            ``what`` and the path).
        OSError: the file cannot be read (missing, a folder, permissions).
    """
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{what} {str(path)!r} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} {str(path)!r} must hold a JSON object, got {type(value).__name__}")
    return value


_LEFTOVER = re.compile(r"\.(?P<name>.+?)(?:\.old|\.vqswitch-[0-9a-f]{8}-\d+-[^/]*\.tmp)")


def recover_directories(parent: str | os.PathLike) -> None:
    """:func:`recover_directory` for every target in ``parent`` that a killed writer left something for: a folder
    moved aside (``.<name>.old``) or a temporary (``.<name>.vqswitch-...tmp``, of a file or a folder; only those of
    dead processes of this host are removed). A missing ``parent`` is left missing; nothing else is touched."""
    parent = Path(parent)
    if not parent.is_dir():
        return
    names = {m.group("name") for m in map(_LEFTOVER.fullmatch, os.listdir(parent)) if m is not None}
    for name in sorted(names):
        recover_directory(parent / name)


def read_json_lines(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines log (``metrics.jsonl``): each line that holds a JSON object, in order.

    Lines that are not a JSON object (a line cut by a killed writer, stray text) are skipped; undecodable bytes
    are replaced. Raises OSError when the file cannot be read.
    """
    records = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records

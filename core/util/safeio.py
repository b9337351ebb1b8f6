"""Writing files safely: a temporary file that nobody else can have planted, fsynced, then renamed.

Every file labelloop writes (exports, model artifacts, the feature cache, rejects
files, the project config) goes through here. The temporary file is created with
``O_EXCL`` in the target folder (``tempfile.mkstemp``), so a symlink planted under a
predictable name by another user of a shared folder is never followed; writers that
need a path rather than a file (DuckDB's COPY) get one inside a private ``mkdtemp``
folder. The data is fsynced before the rename and the folder after it, so a crash
leaves either the old file or the complete new one under the final name, never half
a file; on any error the temporary file is removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path | str, write: Callable[[IO[bytes]], None], *, mode: int = 0o644) -> Path:
    """Call ``write(f)`` with a binary file object; the result replaces ``path`` in one rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: Path | str, data: bytes, *, mode: int = 0o644) -> Path:
    return atomic_write(path, lambda f: f.write(data), mode=mode)


def atomic_write_text(path: Path | str, text: str, *, mode: int = 0o644) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


@contextmanager
def atomic_path(path: Path | str, *, mode: int = 0o644) -> Iterator[Path]:
    """For writers that need a file name: yields a path inside a private temporary folder next to
    ``path``; when the block ends without an error the file is fsynced and renamed to ``path``."""
    path = Path(path)
    folder = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    tmp = folder / path.name
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode & ~_umask())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _read_umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


_UMASK = _read_umask()  # read once at import: os.umask is process-wide and not thread-safe


def _umask() -> int:
    return _UMASK


def set_umask(mask: int) -> int:
    """Set the process's umask (and the one the writes here apply); returns the previous one. For
    start-up code (init, serve) only: the umask is process-wide."""
    global _UMASK
    old = os.umask(mask)
    _UMASK = mask
    return old


LEFTOVER_PREFIXES = (".incoming-", ".export-", ".snapshot-")
"""Temporary files of the server's file operations (core/api/server.py) and of the items snapshots a
training process builds features from (core/loop/featurejob.py)."""


def remove_leftovers(folders: list[Path]) -> list[tuple[Path, int]]:
    """Remove what a killed process left in ``folders`` (not below them): the temporary files and
    folders of atomic writes (``.NAME.*.tmp``) and of the server's imports and exports. Links are
    removed, never followed. Returns each removed path with its size in bytes."""
    removed = []
    for folder in folders:
        if os.path.islink(folder):  # a link in the folder's place leads elsewhere: never clean there
            continue
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for e in entries:
            name = e.name
            if not (name.startswith(LEFTOVER_PREFIXES) or (name.startswith(".") and name.endswith(".tmp"))):
                continue
            path = Path(e.path)
            try:
                if e.is_dir(follow_symlinks=False):
                    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
                    shutil.rmtree(path)
                else:
                    size = e.stat(follow_symlinks=False).st_size
                    os.unlink(path)
            except OSError:
                continue
            removed.append((path, size))
    return removed

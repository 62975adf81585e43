"""Atomic writes: a reader sees the old file or folder or the new one, never half of one.

Every output is written under a temporary name in its target's folder (same
filesystem, so ``os.replace`` is an atomic rename), flushed to disk, and only
then renamed into place. On any failure the temporary is removed and the
target is left exactly as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from rscbir.errors import OutputError


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _checked_folder(target: Path) -> Path:
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{target}: folder {folder} does not exist; create it first")
    return folder


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's bytes (or a folder's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | os.PathLike) -> None:
    """Flush every file below ``folder``, then the folders themselves."""
    folder = Path(folder)
    for root, _, files in os.walk(folder):
        for name in files:
            fsync_path(Path(root) / name)
        fsync_path(root)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success move it into place."""
    target = Path(target)
    folder = _checked_folder(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or target.suffix + ".tmp", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; the result is an ordinary file
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success swap it in with renames only.

    An existing ``target`` is moved aside and removed only after the new folder
    is in place, so a crash leaves either the old or the new folder whole.
    """
    target = Path(target)
    folder = _checked_folder(target)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=folder))
    os.chmod(work, 0o777 & ~_umask())  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield work
        fsync_tree(work)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(work, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, target)
        fsync_path(folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise

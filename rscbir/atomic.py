"""Atomic writes: a reader sees the old file or folder or the new one, never half of one.

Every output is written under a temporary name in its target's folder (same
filesystem, so ``os.replace`` is an atomic rename), flushed to disk, and only
then renamed into place. On any failure the temporary is removed and the
target is left exactly as it was.

A command with several outputs (a GeoJSON, a score GeoTIFF and a preview)
wraps its writes in :func:`all_or_nothing`: each file is still written to its
temporary, but the renames wait until every output has succeeded, so a failed
write (a full disk, a read-only folder) leaves none of them, not some.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from rscbir.errors import OutputError


# (temporary, target) pairs whose rename waits for the end of the enclosing all_or_nothing(); None outside one
_pending: contextvars.ContextVar[list[tuple[Path, Path]] | None] = contextvars.ContextVar("pending_renames", default=None)


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


def settle_folder(folder: str | os.PathLike) -> None:
    """Flush a folder's entries after a rename has committed, best effort: the outputs are already in place, so a
    failure here is not a failed write (and is not reported as one)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
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
        pending = _pending.get()
        if pending is None:
            os.replace(tmp, target)
        else:
            pending.append((tmp, target))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def check_writable(target: str | os.PathLike, folder: bool = False) -> Path:
    """Refuse early, before any work, an output that cannot be written.

    One rule for every command: the parent folder must exist (it is never created) and be writable; a file
    output must not be a folder, a ``folder`` output must not be a file. A missing parent is a user mistake
    (:class:`OutputError`); a read-only place is the machine's refusal (:class:`PermissionError`).
    """
    target = Path(target)
    parent = _checked_folder(target)
    if folder and target.exists() and not target.is_dir():
        raise OutputError(f"{target}: exists and is not a folder")
    if not folder and target.is_dir():
        raise OutputError(f"{target}: is a folder; give a file name")
    writable_place = target if (folder and target.is_dir()) else parent
    if not os.access(writable_place, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "folder is not writable", str(writable_place))
    if not folder and target.exists() and not os.access(target, os.W_OK):
        raise PermissionError(errno.EACCES, "file is read-only", str(target))
    return target


@contextlib.contextmanager
def all_or_nothing() -> Iterator[None]:
    """Defer the renames of every :func:`atomic_path` inside the block to its end: all outputs appear, or none."""
    if _pending.get() is not None:  # nested: the outer block decides
        yield
        return
    pending: list[tuple[Path, Path]] = []
    token = _pending.set(pending)
    try:
        yield
    except BaseException:
        for tmp, _ in pending:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        _pending.reset(token)
    for tmp, target in pending:
        os.replace(tmp, target)
    for folder in {target.parent for _, target in pending}:
        settle_folder(folder)


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
        settle_folder(folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise

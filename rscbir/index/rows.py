"""Row readers: a few rows of a large ``.npy`` file read with ``pread`` (:class:`NpyRows`), and the segments'
arrays read as one (:class:`StackedRows`).

A query reads tens of rows out of gigabytes. Through a memory map each row maps the page-cache
folio around it into the process (on kernels with large folios, up to a megabyte per row), so a
query over ten segments showed 1.3 GiB of resident file pages for 400 rows read (benchmarks,
docs/scaling.md). ``pread`` copies just the bytes asked for: resident memory stays what the
query holds, and the page cache still serves repeated reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np


class NpyRows:
    """Read-only row access to a C-ordered ``.npy`` file: ``rows[i]``, ``rows[array]``, ``rows[a:b]``,
    and :meth:`elements` for a range of the flattened data."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = reader(handle)
            self.offset = handle.tell()
        if fortran or dtype.hasobject:
            raise ValueError(f"{self.path}: not a C-ordered array of plain values")
        self.shape, self.dtype = tuple(shape), dtype
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * dtype.itemsize
        expected = self.offset + self.row_bytes * (self.shape[0] if self.shape else 1)
        if os.path.getsize(self.path) < expected:
            raise ValueError(f"{self.path}: shorter than its header says (truncated)")
        self._fd = os.open(self.path, os.O_RDONLY)

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _read(self, start: int, count: int) -> np.ndarray:
        data = os.pread(self._fd, count * self.row_bytes, self.offset + start * self.row_bytes)
        return np.frombuffer(data, self.dtype).reshape((count, *self.shape[1:]))

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            row = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= row < len(self):
                raise IndexError(f"row {key} out of range for {len(self)} rows")
            return self._read(row, 1)[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self._read(start, max(stop - start, 0)).copy()
            key = np.arange(start, stop, step)
        rows = np.asarray(key)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = np.where(rows < 0, rows + len(self), rows).astype(np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows out of range for {len(self)} rows")
        wanted, back = np.unique(rows, return_inverse=True)  # file order, each row once
        out = np.empty((len(wanted), *self.shape[1:]), self.dtype)
        if not len(wanted):
            return out
        view, size = memoryview(out.reshape(-1).view(np.uint8)), self.row_bytes
        starts = np.flatnonzero(np.diff(wanted, prepend=-2) != 1)  # runs of neighbouring rows: one pread each
        for first, last in zip(starts.tolist(), [*starts[1:].tolist(), len(wanted)]):
            self._read_into(view[first * size : last * size], self.offset + int(wanted[first]) * size)
        return out[back.reshape(-1)]

    def _read_into(self, target: memoryview, offset: int) -> None:
        """Fill ``target`` from the file at ``offset`` (a read may return less than asked: past 2 GiB, on signals)."""
        done = 0
        while done < len(target):
            got = os.preadv(self._fd, [target[done:]], offset + done)
            if got == 0:
                raise OSError(f"{self.path}: file ended at byte {offset + done}, before the rows asked for")
            done += got

    def elements(self, start: int, stop: int) -> np.ndarray:
        """Elements ``start:stop`` of the flattened array (e.g. one row of a 2-D file)."""
        size = self.dtype.itemsize
        data = os.pread(self._fd, (stop - start) * size, self.offset + start * size)
        return np.frombuffer(data, self.dtype).copy()

    def __array__(self, dtype=None, copy=None):
        whole = np.load(self.path, mmap_mode="r")
        return np.asarray(whole, dtype=dtype)


class StackedRows:
    """Rows of several ``(n_i, dim)`` arrays (the segments' memory-mapped files) read as one ``(sum n_i, dim)``
    array: integer, slice and boolean indexing gather from the parts without joining them in memory."""

    def __init__(self, parts: Sequence[np.ndarray]) -> None:
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.dtype = self.parts[0].dtype
        self.shape = (int(self.offsets[-1]), self.parts[0].shape[1])
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            row = int(key) + (len(self) if key < 0 else 0)
            part = int(np.searchsorted(self.offsets, row, side="right")) - 1
            return self.parts[part][row - self.offsets[part]]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                pieces = [p[max(start - o, 0) : max(min(stop - o, len(p)), 0)] for p, o in zip(self.parts, self.offsets)]
                pieces = [np.asarray(piece) for piece in pieces if len(piece)]
                return np.concatenate(pieces) if pieces else np.empty((0, self.shape[1]), self.dtype)
            key = np.arange(start, stop, step)
        rows = np.asarray(key)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = np.where(rows < 0, rows + len(self), rows)
        out = np.empty((len(rows), self.shape[1]), self.dtype)
        which = np.searchsorted(self.offsets, rows, side="right") - 1
        for part in np.unique(which):
            mine = which == part
            local = rows[mine] - self.offsets[part]
            order = np.argsort(local)  # memory maps read fastest in file order
            out[np.flatnonzero(mine)[order]] = self.parts[part][local[order]]
        return out

    def __array__(self, dtype=None, copy=None):
        whole = np.concatenate([np.asarray(p) for p in self.parts])
        return whole.astype(dtype, copy=False) if dtype is not None else whole


def joined(parts: list):
    """One array for the parts: the part itself when there is one, else a :class:`StackedRows` over them."""
    return parts[0] if len(parts) == 1 else StackedRows(parts)


__all__ = ["NpyRows", "StackedRows", "joined"]

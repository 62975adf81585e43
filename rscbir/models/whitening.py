"""PCA-whitening: shorter, decorrelated vectors fitted on the corpus itself; within-place whitening across dates.

Whitening learned on the database is a standard step after CNN feature
extraction for retrieval (Jegou & Chum 2012; Babenko & Lempitsky 2015): it
cuts the dimension and down-weights directions that every image shares.

``power`` sets the whitening strength: components are divided by
eigenvalue ** power, so 0 is centred PCA and 0.5 is full whitening. On
RSSCN7 (700 images) full whitening *lowers* mAP (0.45 -> 0.27 at 128-d) while
centred PCA raises it (0.48), so the default is 0; see benchmarks/results.md.
"""

from __future__ import annotations

import functools
import operator
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from rscbir.atomic import atomic_path
from rscbir.errors import ModelError


@dataclass(frozen=True)
class PCAWhitening:
    """x -> normalise((x - mean) @ projection), projection = V_d / (eigenvalues_d + eps) ** power."""

    mean: np.ndarray  # (D,)
    projection: np.ndarray  # (D, d)

    @property
    def dim(self) -> int:
        return int(self.projection.shape[1])

    @classmethod
    def fit(cls, vectors: np.ndarray, dim: int, power: float = 0.0, eps: float = 1e-6) -> "PCAWhitening":
        """Fit on (N, D) vectors; ``dim`` may not exceed min(N - 1, D)."""
        vectors = np.asarray(vectors)  # float16 or float32 as stored: converted to float64 a block at a time
        n, d = vectors.shape
        _check_dim(dim, n, d)
        if n >= d:
            return cls.from_moments(Moments.of(vectors), dim, power, eps)
        # fewer vectors than dimensions (7616-d grid features): eigen-decompose the n x n Gram matrix
        mean = vectors.mean(axis=0, dtype=np.float64)
        gram = np.zeros((n, n))  # 1540 x 7616: 0.6 s, its SVD 4.4 s; built a block of dimensions at a time
        for part in _column_blocks(d):
            block = np.asarray(vectors[:, part], dtype=np.float64) - mean[part]
            gram += block @ block.T
        gram_values, gram_vectors = np.linalg.eigh(gram)
        top = np.argsort(gram_values)[::-1][:dim]
        singular = np.sqrt(np.maximum(gram_values[top], 1e-300))
        eigenvalues = singular**2 / max(n - 1, 1)
        eigenvectors = np.concatenate([(np.asarray(vectors[:, part], dtype=np.float64) - mean[part]).T @ gram_vectors[:, top]
                                       for part in _column_blocks(d)]) / singular  # fmt: skip
        return cls._from_eigen(mean, eigenvalues, eigenvectors, dim, power, eps)

    @classmethod
    def fit_rows(cls, parts: Sequence[tuple[np.ndarray, np.ndarray]], dim: int, power: float = 0.0) -> "PCAWhitening":
        """Fit on ``rows`` of each ``(vectors, rows)`` part (arrays or memory maps, e.g. a sample of a store). With at
        least as many rows as dimensions the moments are summed a block of rows at a time, so the sample is never
        held (200k grid-pooled 7616-d float16 vectors would be 2.9 GiB); with fewer, the rows are read and fitted."""
        if sum(len(rows) for _, rows in parts) >= parts[0][0].shape[1]:
            return cls.from_moments(functools.reduce(operator.add, (Moments.of(v, rows) for v, rows in parts)), dim, power)
        return cls.fit(np.concatenate([np.asarray(v[rows]) for v, rows in parts]), dim, power)

    @classmethod
    def from_moments(cls, moments: "Moments", dim: int, power: float = 0.0, eps: float = 1e-6) -> "PCAWhitening":
        """Fit from the count, sum and scatter of the vectors (:class:`Moments`): what Dask workers send back
        instead of the vectors. Needs as many vectors as dimensions (the covariance's eigen-decomposition)."""
        n, d = moments.count, len(moments.total)
        _check_dim(dim, n, d)
        mean = moments.total / n
        covariance = (moments.scatter - n * np.outer(mean, mean)) / max(n - 1, 1)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        return cls._from_eigen(mean, eigenvalues, eigenvectors, dim, power, eps)

    @classmethod
    def _from_eigen(cls, mean, eigenvalues, eigenvectors, dim: int, power: float, eps: float) -> "PCAWhitening":
        order = np.argsort(eigenvalues)[::-1][:dim]
        eigenvectors = eigenvectors[:, order]
        # an eigenvector's sign is arbitrary: fix it (largest entry positive), so fits of the same data agree however summed
        eigenvectors = eigenvectors * np.where(eigenvectors[np.abs(eigenvectors).argmax(axis=0), np.arange(len(order))] < 0, -1.0, 1.0)
        projection = eigenvectors / (np.maximum(eigenvalues[order], 0) + eps) ** power
        return cls(mean.astype(np.float32), projection.astype(np.float32))

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        out = (np.asarray(vectors, dtype=np.float32) - self.mean) @ self.projection
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, mean=self.mean, projection=self.projection)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PCAWhitening":
        with np.load(Path(path)) as data:
            return cls(data["mean"], data["projection"])


@dataclass(frozen=True)
class Moments:
    """Count, sum and scatter (X^T X) of vectors in float64: a PCA fitted on any number of vectors without holding
    them, summed a block of rows at a time (:meth:`of`) and over parts (``+``, Dask workers' parts of an index)."""

    count: int
    total: np.ndarray  # (D,)
    scatter: np.ndarray  # (D, D)

    @classmethod
    def of(cls, vectors: np.ndarray, rows: np.ndarray | None = None, block: int = 4096) -> "Moments":
        """The moments of ``vectors`` (an array or memory map; only ``rows`` of it when given), read in blocks."""
        rows = np.arange(len(vectors)) if rows is None else np.asarray(rows)
        d = vectors.shape[1]
        total, scatter = np.zeros(d), np.zeros((d, d))
        for start in range(0, len(rows), block):
            chunk = np.asarray(vectors[rows[start : start + block]], dtype=np.float64)
            total += chunk.sum(axis=0)
            scatter += chunk.T @ chunk
        return cls(len(rows), total, scatter)

    def __add__(self, other: "Moments") -> "Moments":
        return Moments(self.count + other.count, self.total + other.total, self.scatter + other.scatter)


def _check_dim(dim: int, n: int, d: int) -> None:
    if not 1 <= dim <= min(n - 1, d):
        raise ModelError(f"--dim {dim} needs 1 <= dim <= min(vectors - 1, {d}) = {min(n - 1, d)}")


def _column_blocks(d: int, width: int = 512) -> list[slice]:
    """Slices of ``width`` dimensions: the float64 copy of the data is one block, not the whole matrix."""
    return [slice(start, min(start + width, d)) for start in range(0, d, width)]


@dataclass(frozen=True)
class PlaceWhitening:
    """x -> normalise(x @ matrix): within-place whitening of the vectors of an aligned index of 2+ dates.

    The same place seen on several dates differs by how each date was acquired (light, season, haze, sensor) far
    more than by what changed on the ground. Those differences are a covariance (within-class covariance
    normalisation, Hatch et al. 2006, with each place a class): dividing it out, ``matrix = (S_w + shrink * mean
    variance * I) ** -1/2``, makes a search rank ground, not acquisition. No label is used, only the grid that
    says which patches are the same place. OSCD, the same unchanged place first across dates: 0.864 -> 0.962.
    """

    matrix: np.ndarray  # (d, d)

    @classmethod
    def fit(cls, deviations: np.ndarray, shrink: float) -> "PlaceWhitening":
        """Fit on (n, d) deviations of each place's vectors from that place's mean over its dates."""
        deviations = np.asarray(deviations, dtype=np.float64)
        within = deviations.T @ deviations / max(len(deviations), 1)
        within += shrink * np.trace(within) / len(within) * np.eye(len(within))
        eigenvalues, eigenvectors = np.linalg.eigh(within)
        matrix = (eigenvectors / np.sqrt(np.maximum(eigenvalues, 1e-12))) @ eigenvectors.T
        return cls(matrix.astype(np.float32))

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        out = np.asarray(vectors, dtype=np.float32) @ self.matrix
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, matrix=self.matrix)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PlaceWhitening":
        with np.load(Path(path)) as data:
            return cls(data["matrix"])

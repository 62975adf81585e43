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

import os
from dataclasses import dataclass
from pathlib import Path

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
        if not 1 <= dim <= min(n - 1, d):
            raise ModelError(f"--dim {dim} needs 1 <= dim <= min(vectors - 1, {d}) = {min(n - 1, d)}")
        mean = vectors.mean(axis=0, dtype=np.float64)
        if n < d:  # fewer vectors than dimensions (7616-d grid features): eigen-decompose the n x n Gram matrix
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
        else:
            centred = np.asarray(vectors, dtype=np.float64) - mean
            eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred / max(n - 1, 1))
        order = np.argsort(eigenvalues)[::-1][:dim]
        projection = eigenvectors[:, order] / (np.maximum(eigenvalues[order], 0) + eps) ** power
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

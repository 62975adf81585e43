"""PCA-whitening: shorter, decorrelated vectors fitted on the corpus itself.

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
        vectors = np.asarray(vectors, dtype=np.float64)
        n, d = vectors.shape
        if not 1 <= dim <= min(n - 1, d):
            raise ModelError(f"--dim {dim} needs 1 <= dim <= min(vectors - 1, {d}) = {min(n - 1, d)}")
        mean = vectors.mean(axis=0)
        centred = vectors - mean
        if n < d:  # fewer vectors than dimensions (7616-d grid features): the SVD of the data is far cheaper
            _, singular, vt = np.linalg.svd(centred, full_matrices=False)
            eigenvalues, eigenvectors = singular**2 / max(n - 1, 1), vt.T
        else:
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

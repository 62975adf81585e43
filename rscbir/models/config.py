"""What decides how a patch becomes a vector: the record kept with every store and index.

Kept apart from :mod:`rscbir.models.features` so that reading an index (a query, ``rscbir info``)
needs no deep-learning framework.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read a MiB at a time: what ModelConfig records of the weights a model came from."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelConfig:
    """Everything that decides how a patch becomes a vector; recorded with every store and index."""

    backbone: str
    weights: str  # file the trunk weights came from
    weights_sha256: str
    pooling: str
    input_bands: tuple[str, ...]
    rgb: tuple[int, ...]
    input_size: int | None
    dim: int
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    stages: int = 1  # the last N stage outputs pooled and concatenated (1: the last feature map only)
    views: int = 1  # flips/rotations averaged at embedding time (1, 2, 4 or 8)

    def fingerprint(self) -> dict:
        """The fields that must match for two vectors to be comparable."""
        keys = ("backbone", "weights_sha256", "pooling", "input_bands", "rgb", "input_size", "dim", "checkpoint_sha256",
                "stages", "views")
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if k in keys}

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, doc: dict) -> "ModelConfig":
        doc = dict(doc)
        doc["input_bands"], doc["rgb"] = tuple(doc["input_bands"]), tuple(doc["rgb"])
        return cls(**doc)


__all__ = ["ModelConfig", "file_sha256"]

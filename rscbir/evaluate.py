"""Retrieval quality against labelled data: mAP and precision at k.

Every image queries all the others (itself excluded); an image of the same
class is relevant. This is the protocol of the RS CBIR literature on scene
sets such as UC Merced, PatternNet and RSSCN7.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from rscbir.errors import InvalidSceneError
from rscbir.models.features import FeatureModel

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class LabelledImages:
    """A class-per-folder image set (ImageFolder layout)."""

    paths: list[Path]
    labels: np.ndarray
    classes: list[str]

    @classmethod
    def scan(cls, root: str | os.PathLike) -> "LabelledImages":
        root = Path(root)
        if not root.is_dir():
            raise InvalidSceneError(f"{root}: not a folder; expected one sub-folder of images per class")
        classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        paths, labels = [], []
        for index, name in enumerate(classes):
            files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            paths += files
            labels += [index] * len(files)
        if len(classes) < 2 or not paths:
            raise InvalidSceneError(f"{root}: needs at least two class sub-folders holding images ({', '.join(IMAGE_SUFFIXES)})")
        return cls(paths, np.asarray(labels), classes)

    def subset(self, indices: Sequence[int]) -> "LabelledImages":
        indices = list(indices)
        return LabelledImages([self.paths[i] for i in indices], self.labels[indices], self.classes)

    def halves(self, seed: int = 0) -> tuple["LabelledImages", "LabelledImages"]:
        """A stratified 50/50 split: train on one half, evaluate on the other only."""
        rng = np.random.default_rng(seed)
        first, second = [], []
        for label in np.unique(self.labels):
            members = rng.permutation(np.flatnonzero(self.labels == label))
            first += members[: len(members) // 2].tolist()
            second += members[len(members) // 2 :].tolist()
        return self.subset(sorted(first)), self.subset(sorted(second))


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """An RGB image as a float tensor (3, H, W) in [0, 1]."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except OSError as exc:
        raise InvalidSceneError(f"{path}: not a readable image ({exc})") from None
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def embed_images(model: FeatureModel, paths: Sequence[Path], batch_size: int = 16, runtime: str = "auto") -> np.ndarray:
    """(N, dim) vectors of image files, in order (images of one size batch together)."""
    from rscbir.models.runtime import forward_for

    forward = forward_for(model, runtime)
    out = []
    for start in range(0, len(paths), batch_size):
        batch = [load_image(p) for p in paths[start : start + batch_size]]
        if len({tuple(t.shape) for t in batch}) == 1:
            out.append(forward(torch.stack(batch)).float().numpy())
        else:
            out.extend(forward(t[None]).float().numpy() for t in batch)
    return np.concatenate(out)


def retrieval_metrics(vectors: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (5, 10, 50)) -> dict[str, float]:
    """mAP and P@k when every vector queries all the others (cosine similarity).

    Vectors must be L2-normalised. Average precision is over the full ranking.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    labels = np.asarray(labels)
    n = len(vectors)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, : n - 1]  # self ranks last; drop it
    relevant = labels[order] == labels[:, None]
    hits = np.cumsum(relevant, axis=1)
    n_relevant = relevant.sum(axis=1)
    ranks = np.arange(1, n)
    ap = (relevant * hits / ranks).sum(axis=1) / np.maximum(n_relevant, 1)
    result = {"mAP": float(ap[n_relevant > 0].mean()), "queries": int(n)}
    for k in ks:
        k_eff = min(k, n - 1)
        result[f"P@{k}"] = float(hits[:, k_eff - 1].mean() / k_eff)
    return result

"""Scene sets for retrieval: labelled images, one folder per class (RSSCN7, UC Merced; torchvision's ImageFolder layout)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from rscbir.errors import InvalidSceneError
from rscbir.images import IMAGE_SUFFIXES


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

    def select(self, classes: Sequence[str] | None = None, half: str = "all", seed: int = 0) -> "LabelledImages":
        """Only these classes (labels renumbered over them), then one stratified half (``first``/``second``) or all."""
        images = self
        if classes:
            unknown = sorted(set(classes) - set(self.classes))
            if unknown:
                raise InvalidSceneError(f"no class {', '.join(unknown)}; classes: {', '.join(self.classes)}")
            chosen = [c for c in self.classes if c in set(classes)]
            keep = [i for i, label in enumerate(self.labels) if self.classes[label] in chosen]
            relabel = {self.classes.index(c): i for i, c in enumerate(chosen)}
            images = LabelledImages([self.paths[i] for i in keep], np.asarray([relabel[self.labels[i]] for i in keep]), chosen)
        if half == "all":
            return images
        first, second = images.halves(seed)
        return first if half == "first" else second

    def halves(self, seed: int = 0) -> tuple["LabelledImages", "LabelledImages"]:
        """A stratified 50/50 split: train on one half, evaluate on the other only."""
        rng = np.random.default_rng(seed)
        first, second = [], []
        for label in np.unique(self.labels):
            members = rng.permutation(np.flatnonzero(self.labels == label))
            first += members[: len(members) // 2].tolist()
            second += members[len(members) // 2 :].tolist()
        return self.subset(sorted(first)), self.subset(sorted(second))


def is_image_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a class-per-folder image set (sub-folders holding images)."""
    path = Path(path)
    if not path.is_dir():
        return False
    subdirs = [d for d in path.iterdir() if d.is_dir()]
    return bool(subdirs) and any(f.suffix.lower() in IMAGE_SUFFIXES for d in subdirs for f in d.iterdir())


__all__ = ["LabelledImages", "is_image_folder"]

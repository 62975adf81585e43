"""The bi-temporal image-pair layout of LEVIR-CD and DSIFN: ``A/``, ``B/`` and ``label/`` with the same file names;
plain images, no georeferencing; label pixels above 0 are change."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image

from rscbir.atomic import atomic_path
from rscbir.errors import LabelError
from rscbir.images import IMAGE_SUFFIXES
from rscbir.scene import Scene

NOMINAL_DATES = ("20000101", "20010101")  # pairs carry no dates, and change needs two


def is_pair_layout(root: str | os.PathLike) -> bool:
    """Whether ``root`` holds the common bi-temporal layout ``A/``, ``B/``, ``label/`` (LEVIR-CD, DSIFN)."""
    root = Path(root)
    return all((root / name).is_dir() for name in ("A", "B", "label"))


def pair_names(root: str | os.PathLike) -> list[str]:
    """The image names present in ``A/``, ``B/`` and ``label/`` alike; :class:`LabelError` when one is missing."""
    root = Path(root)
    names = sorted(p.name for p in (root / "A").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    missing = [n for n in names if not (root / "B" / n).is_file() or not (root / "label" / n).is_file()]
    if not names or missing:
        raise LabelError(f"{root}: needs the same file names in A/, B/ and label/ (missing: {', '.join(missing[:3]) or 'all'})")
    return names


def pair_scenes(root: str | os.PathLike, name: str, folder: str | os.PathLike) -> tuple[Scene, Scene]:
    """Image ``name`` of ``A/`` and ``B/`` as scenes on a nominal 1 m grid, written as GeoTIFFs into ``folder``."""
    root, folder = Path(root), Path(folder)
    return tuple(nominal_scene(root / side / name, folder / f"{side}_{Path(name).stem}.tif", date)
                 for side, date in zip(("A", "B"), NOMINAL_DATES))  # fmt: skip


def pair_label(root: str | os.PathLike, name: str, shape: tuple[int, int]) -> np.ndarray:
    """The change mask of image ``name`` (label pixels above 0), checked to cover ``shape`` pixel for pixel."""
    path = Path(root) / "label" / name
    truth = np.asarray(Image.open(path).convert("L")) > 0
    if truth.shape != tuple(shape):
        raise LabelError(f"{path}: label is {truth.shape[1]} x {truth.shape[0]} px, the images are "
                         f"{shape[1]} x {shape[0]}; labels must cover the image pixel for pixel")  # fmt: skip
    return truth


def nominal_scene(png: Path, target: Path, date: str) -> Scene:
    """An RGB image file as a GeoTIFF on a nominal 1 m grid (EPSG:3857 at the origin), opened as a scene of ``date``
    (nominal too: pairs carry no dates, and change needs two). A GeoTIFF written before from the same image is
    reused, so the pair's cached evidence stays valid."""
    if not (target.exists() and target.stat().st_mtime_ns >= png.stat().st_mtime_ns):
        pixels = np.asarray(Image.open(png).convert("RGB")).transpose(2, 0, 1)
        with atomic_path(target, suffix=".tif") as tmp:
            with rasterio.open(tmp, "w", driver="GTiff", width=pixels.shape[2], height=pixels.shape[1], count=3, dtype="uint8",
                               crs="EPSG:3857", transform=Affine(1, 0, 0, 0, -1, pixels.shape[1])) as dst:  # fmt: skip
                dst.write(pixels)
                dst.descriptions = ("R", "G", "B")
    return Scene.open(target, band_names=["R", "G", "B"], scaling="divide:255", date=date)


__all__ = ["NOMINAL_DATES", "is_pair_layout", "nominal_scene", "pair_label", "pair_names", "pair_scenes"]

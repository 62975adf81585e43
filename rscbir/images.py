"""Plain image files (no georeferencing): the suffixes rscbir reads, and one image as a tensor.

Labelled sets of such files (one folder per class) are read by :mod:`rscbir.datasets.scene_sets`.
"""

from __future__ import annotations

import os

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from rscbir.errors import InvalidSceneError

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img", ".dat", ".nc")  # what a folder of band files holds


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """An RGB image as a float tensor (3, H, W) in [0, 1]."""
    import torch  # only a model consumes tensors; reading the file list needs no torch

    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except OSError as exc:
        raise InvalidSceneError(f"{path}: not a readable image ({exc})") from None
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()

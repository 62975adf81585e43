"""The OSCD layout of labelled change between two dates: ``CITY/imgs_1/``, ``CITY/imgs_2/`` (Sentinel-2 band
files, dated by ``dates.txt``) and ``CITY/cm/CITY-cm.tif`` (1 no change, 2 change, on date 1's 10 m grid)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from rscbir.errors import InvalidSceneError, LabelError
from rscbir.scene import Scene

RGB_BANDS = ("B04", "B03", "B02")  # Sentinel-2 red, green, blue: what an ImageNet model reads
CHANGED = 2  # label value of a changed pixel


def find_change_sets(root: str | os.PathLike) -> list[str]:
    """Names of the OSCD-style city folders under ``root`` that hold labels (``imgs_1/``, ``imgs_2/``, ``cm/``)."""
    root = Path(root)
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and (d / "imgs_1").is_dir() and (d / "imgs_2").is_dir()
                   and (d / "cm").is_dir())  # fmt: skip
    if not found:
        raise LabelError(f"{root}: no city folder with imgs_1/, imgs_2/ and cm/ below it")
    return found


def city_scene(city_dir: str | os.PathLike, date: int) -> Scene:
    """Date ``date`` (1 or 2) of an OSCD city, every band."""
    city_dir = Path(city_dir)
    if not (city_dir / f"imgs_{date}").is_dir():
        raise InvalidSceneError(f"{city_dir}: not an OSCD city folder (imgs_1/, imgs_2/, cm/)")
    return Scene.open(city_dir / f"imgs_{date}")


def city_pair(city_dir: str | os.PathLike) -> tuple[Scene, Scene]:
    """Both dates of an OSCD city, the second cut to the first's bands."""
    before, after = city_scene(city_dir, 1), city_scene(city_dir, 2)
    return before, after.select(before.band_names)


def oscd_labels_on(city_dir: str | os.PathLike, grid) -> np.ndarray:
    """The OSCD change mask (bool, value 2) cut to ``grid``, a window of date 1's 10 m grid.

    The label raster has no CRS of its own: it lies on the 10 m grid of date 1,
    whose transform is B02's.
    """
    city_dir = Path(city_dir)
    b02 = next((city_dir / "imgs_1").glob("*_B02.tif"))
    with rasterio.open(b02) as ref:
        transform = ref.transform
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(next((city_dir / "cm").glob("*-cm.tif"))) as cm:
            changed = cm.read(1) == CHANGED
    col0 = int(round((grid.transform.c - transform.c) / transform.a))
    row0 = int(round((grid.transform.f - transform.f) / transform.e))
    return changed[row0 : row0 + grid.height, col0 : col0 + grid.width]


def oscd_change_fraction(city_dir: str | os.PathLike, frame, grid) -> np.ndarray:
    """Fraction of labelled-change pixels in each patch of ``frame`` (windows on ``grid``)."""
    changed = oscd_labels_on(city_dir, grid)
    fractions = []
    for r in frame.itertuples():
        window = changed[r.row_off : r.row_off + r.height, r.col_off : r.col_off + r.width]
        fractions.append(float(window.mean()) if window.size else np.nan)
    return np.asarray(fractions)


__all__ = ["CHANGED", "RGB_BANDS", "city_pair", "city_scene", "find_change_sets", "oscd_change_fraction", "oscd_labels_on"]

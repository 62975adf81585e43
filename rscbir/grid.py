"""Pixel grids: the CRS, affine transform and size that patches are cut from.

A :class:`Grid` is a small frozen value with no I/O. Two dates are aligned by
building one common grid (:func:`common_grid`) and reading every scene onto it,
so that patch ``(row, col)`` covers the same ground in every date.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from affine import Affine
from rasterio.crs import CRS
from rasterio.coords import BoundingBox
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds
from rasterio.windows import from_bounds
from rasterio.windows import transform as window_transform

from rscbir.errors import NoOverlapError

# Tolerance (in pixels) when snapping bounds to a grid: absorbs float noise from
# reprojection without giving away a real partial pixel.
_SNAP_EPS = 1e-6


@dataclass(frozen=True)
class Grid:
    """A georeferenced pixel grid.

    Parameters
    ----------
    crs : rasterio.crs.CRS
        Coordinate reference system of ``transform``.
    transform : affine.Affine
        Maps pixel (col, row) to CRS coordinates of the pixel's upper-left corner.
    width, height : int
        Size in pixels.
    """

    crs: CRS
    transform: Affine
    width: int
    height: int

    @classmethod
    def from_dataset(cls, dataset) -> "Grid":
        """The grid of an open rasterio dataset."""
        return cls(dataset.crs, dataset.transform, dataset.width, dataset.height)

    def to_dict(self) -> dict:
        """JSON-able form (CRS as WKT)."""
        return {"crs": self.crs.to_wkt(), "transform": list(self.transform)[:6], "width": self.width, "height": self.height}

    @classmethod
    def from_dict(cls, doc: dict) -> "Grid":
        return cls(CRS.from_wkt(doc["crs"]), Affine(*doc["transform"]), int(doc["width"]), int(doc["height"]))

    @property
    def bounds(self) -> BoundingBox:
        """(left, bottom, right, top) in the grid CRS."""
        return BoundingBox(*window_bounds(Window(0, 0, self.width, self.height), self.transform))

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units, both positive."""
        return (math.hypot(self.transform.a, self.transform.d), math.hypot(self.transform.b, self.transform.e))

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width)."""
        return (self.height, self.width)

    def window_bounds(self, window: Window) -> BoundingBox:
        """Bounds of a pixel window in the grid CRS."""
        return BoundingBox(*window_bounds(window, self.transform))

    def window_transform(self, window: Window) -> Affine:
        """Affine transform of a pixel window."""
        return window_transform(window, self.transform)

    def same_as(self, other: "Grid", tolerance: float = 1e-9) -> bool:
        """True when both grids have the same CRS, size and (almost) transform."""
        return (
            self.width == other.width
            and self.height == other.height
            and self.crs == other.crs
            and self.transform.almost_equals(other.transform, precision=tolerance * max(self.res))
        )

    def crop(self, bounds: Sequence[float]) -> "Grid":
        """The sub-grid of whole pixels that lie inside ``bounds`` (grid CRS).

        Pixels keep their position: the result is a window of this grid, so a
        scene read onto it lines up pixel for pixel with this grid.
        """
        win = from_bounds(*bounds, transform=self.transform)
        col0 = max(0, math.ceil(win.col_off - _SNAP_EPS))
        row0 = max(0, math.ceil(win.row_off - _SNAP_EPS))
        col1 = min(self.width, math.floor(win.col_off + win.width + _SNAP_EPS))
        row1 = min(self.height, math.floor(win.row_off + win.height + _SNAP_EPS))
        if col1 <= col0 or row1 <= row0:
            raise NoOverlapError(f"bounds {tuple(bounds)} contain no whole pixel of the grid")
        window = Window(col0, row0, col1 - col0, row1 - row0)
        return Grid(self.crs, self.window_transform(window), col1 - col0, row1 - row0)

    def bounds_in(self, crs: CRS) -> BoundingBox:
        """Bounds of this grid in another CRS (densified, so curved edges are covered)."""
        if crs == self.crs:
            return self.bounds
        return BoundingBox(*transform_bounds(self.crs, crs, *self.bounds, densify_pts=21))


def intersect_bounds(a: Sequence[float], b: Sequence[float]) -> BoundingBox | None:
    """Intersection of two (left, bottom, right, top) boxes, or None when empty."""
    left, bottom = max(a[0], b[0]), max(a[1], b[1])
    right, top = min(a[2], b[2]), min(a[3], b[3])
    if right <= left or top <= bottom:
        return None
    return BoundingBox(left, bottom, right, top)


def common_grid(grids: Sequence[Grid], names: Sequence[str] | None = None, reference: int = 0) -> Grid:
    """One grid covering the ground that every grid covers.

    The result is the reference grid (the first by default) cropped to the
    intersection of all footprints, so its pixels are the reference's pixels.

    Raises
    ------
    NoOverlapError
        When the footprints have no common area.
    """
    names = list(names) if names is not None else [f"grid {i}" for i in range(len(grids))]
    ref = grids[reference]
    area: BoundingBox | None = ref.bounds
    for name, grid in zip(names, grids):
        other = grid.bounds_in(ref.crs)
        area = intersect_bounds(area, other)
        if area is None:
            raise NoOverlapError(
                f"{name} does not overlap {names[reference]}: no common footprint to align on; "
                "pass scenes of the same area"
            )
    try:
        return ref.crop(area)
    except NoOverlapError:
        raise NoOverlapError(
            f"the common footprint of {', '.join(names)} is smaller than one pixel; "
            "pass scenes of the same area"
        ) from None

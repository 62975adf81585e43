"""Cut a scene into patches on a grid, streaming by strips of patch rows.

Patches are laid out on a grid (the scene's own, or a common grid shared with
another date) by patch size and stride. Each kept patch carries a
:class:`PatchRecord` with its georeferencing; the pixels come along only when
asked for. Memory is one strip (patch height x grid width x bands), never the
scene.
"""

from __future__ import annotations

import enum
import logging
import math
import re
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
from affine import Affine
from pyproj import Geod
from rasterio.coords import BoundingBox
from rasterio.enums import Resampling
from rasterio.windows import Window

from rscbir.errors import TilingError
from rscbir.grid import Grid, common_grid
from rscbir.scene import Scene

log = logging.getLogger(__name__)

_LENGTH = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(px|m|km)?\s*$", re.IGNORECASE)


class EdgePolicy(str, enum.Enum):
    """What to do with patches that would cross the grid's right or bottom edge."""

    DROP = "drop"  # keep only whole patches
    PAD = "pad"  # cover the whole grid; pad with nodata past the edge
    FIT = "fit"  # cover the whole grid; the last patch of a row or column moves inward to end at the edge


@dataclass(frozen=True)
class TilingConfig:
    """Patch layout.

    ``patch_size`` and ``stride`` are pixels (``64``, ``"64px"``) or ground
    lengths (``"640m"``, ``"1.28km"``); stride defaults to the patch size.
    ``max_nodata`` drops patches whose nodata (or all-zero) fraction exceeds it.
    """

    patch_size: int | str = 64
    stride: int | str | None = None
    edge: EdgePolicy = EdgePolicy.DROP
    max_nodata: float = 0.25

    def __post_init__(self) -> None:
        object.__setattr__(self, "edge", EdgePolicy(self.edge))
        if not 0.0 <= self.max_nodata <= 1.0:
            raise TilingError(f"max_nodata must lie in [0, 1], got {self.max_nodata}")

    def pixels(self, grid: Grid) -> tuple[int, int]:
        """(patch size, stride) in pixels of ``grid``."""
        size = length_in_pixels(self.patch_size, grid)
        stride = size if self.stride is None else length_in_pixels(self.stride, grid)
        return size, stride

    def layout(self, grid: Grid) -> tuple[int, int]:
        """Number of patch (rows, cols) this layout puts on ``grid``."""
        return patch_layout(grid, *self.pixels(grid), self.edge)

    def to_dict(self) -> dict:
        """JSON-ready form, as recorded in stores and index manifests."""
        return {"patch_size": self.patch_size, "stride": self.stride, "edge": self.edge.value, "max_nodata": self.max_nodata}

    @classmethod
    def from_dict(cls, doc: dict) -> "TilingConfig":
        return cls(doc["patch_size"], doc.get("stride"), EdgePolicy(doc.get("edge", "drop")), doc.get("max_nodata", 0.25))


@dataclass(frozen=True)
class PatchRecord:
    """Where a patch lies: everything needed to find it again on the ground."""

    patch_id: str
    scene_id: str
    date: str | None
    row: int
    col: int
    window: Window
    transform: Affine
    bounds: BoundingBox
    nodata_fraction: float


@dataclass(frozen=True)
class Patch:
    """A patch record and, when read, its raw pixels (bands, size, size)."""

    record: PatchRecord
    data: np.ndarray | None = None


def patch_offset(index: int, size: int, stride: int, extent: int, edge: EdgePolicy = EdgePolicy.DROP) -> int:
    """Pixel offset of the ``index``-th patch along an axis of ``extent`` pixels (FIT keeps it inside)."""
    offset = index * stride
    return min(offset, extent - size) if edge is EdgePolicy.FIT else offset


def make_record(scene: Scene, grid: Grid, row: int, col: int, size: int, stride: int, nodata_fraction: float,
                edge: EdgePolicy = EdgePolicy.DROP) -> PatchRecord:  # fmt: skip
    """The record of patch (row, col) of ``scene`` on ``grid``."""
    window = Window(patch_offset(col, size, stride, grid.width, edge), patch_offset(row, size, stride, grid.height, edge), size, size)
    return PatchRecord(
        patch_id=f"{scene.scene_id}:{row}:{col}",
        scene_id=scene.scene_id,
        date=scene.date.isoformat() if scene.date else None,
        row=row,
        col=col,
        window=window,
        transform=grid.window_transform(window),
        bounds=grid.window_bounds(window),
        nodata_fraction=nodata_fraction,
    )


def length_in_pixels(value: int | str, grid: Grid) -> int:
    """A length in pixels (``64``, ``"64px"``) or ground units (``"640m"``) as pixels of ``grid``.

    For geographic grids the metre size of a pixel is measured at the grid
    centre on the WGS84 ellipsoid.
    """
    if isinstance(value, (int, np.integer)):
        pixels = float(value)
    else:
        match = _LENGTH.match(str(value))
        if not match:
            raise TilingError(f"cannot read length {value!r}; use pixels (64) or ground units (640m, 1.2km)")
        number, unit = float(match.group(1)), (match.group(2) or "px").lower()
        if unit == "px":
            pixels = number
        else:
            metres = number * (1000.0 if unit == "km" else 1.0)
            pixels = metres / _pixel_size_metres(grid)
    rounded = int(round(pixels))
    if rounded < 1:
        raise TilingError(f"length {value!r} is less than one pixel of this grid")
    if abs(pixels - rounded) > 0.01:
        log.info("length %s is %.2f px; using %d px", value, pixels, rounded)
    return rounded


def _pixel_size_metres(grid: Grid) -> float:
    if not grid.crs.is_geographic:
        factor = grid.crs.linear_units_factor[1] if grid.crs.linear_units_factor else 1.0
        return float(np.sqrt(grid.res[0] * grid.res[1]) * factor)
    left, bottom, right, top = grid.bounds
    lon, lat = (left + right) / 2, (bottom + top) / 2
    geod = Geod(ellps="WGS84")
    _, _, dx = geod.inv(lon, lat, lon + grid.res[0], lat)
    _, _, dy = geod.inv(lon, lat, lon, lat + grid.res[1])
    return float(np.sqrt(abs(dx * dy)))


def patch_layout(grid: Grid, size: int, stride: int, edge: EdgePolicy) -> tuple[int, int]:
    """Number of patch (rows, cols) on ``grid``.

    Raises
    ------
    TilingError
        When the patch is larger than the grid.
    """
    if size > grid.height or size > grid.width:
        raise TilingError(
            f"patch of {size} px is larger than the scene ({grid.width} x {grid.height} px); "
            "use a smaller --patch-size"
        )
    if stride < 1:
        raise TilingError(f"stride must be at least 1 px, got {stride}")

    def count(extent: int) -> int:
        if edge is EdgePolicy.DROP:
            return (extent - size) // stride + 1
        return math.ceil((extent - size) / stride) + 1

    return count(grid.height), count(grid.width)


def iter_patches(
    scene: Scene,
    config: TilingConfig = TilingConfig(),
    grid: Grid | None = None,
    with_data: bool = True,
    resampling: Resampling = Resampling.bilinear,
    rows: Iterable[int] | None = None,
) -> Iterator[Patch]:
    """Yield the patches of ``scene`` on ``grid`` (default: the scene's own grid).

    Patches are read a strip of patch rows at a time; patches whose nodata
    fraction exceeds ``config.max_nodata`` are skipped. With ``with_data`` each
    patch carries its raw pixels, ready for :meth:`Scene.scale`. ``rows``
    restricts the patch rows read (e.g. one share per worker process).
    """
    grid = grid or scene.grid
    size, stride = config.pixels(grid)
    n_rows, n_cols = patch_layout(grid, size, stride, config.edge)
    strip_width = min((n_cols - 1) * stride + size, grid.width) if config.edge is EdgePolicy.FIT else (n_cols - 1) * stride + size
    skipped = 0
    with scene.reader(grid, resampling) as reader:
        for row in range(n_rows) if rows is None else rows:
            row_off = patch_offset(row, size, stride, grid.height, config.edge)
            strip = reader.read(Window(0, row_off, strip_width, size))
            valid = reader.valid_mask(strip)
            for col in range(n_cols):
                col_off = patch_offset(col, size, stride, grid.width, config.edge)
                missing = 1.0 - float(valid[:, col_off : col_off + size].mean())
                if missing > config.max_nodata:
                    skipped += 1
                    continue
                record = make_record(scene, grid, row, col, size, stride, missing, config.edge)
                data = strip[:, :, col_off : col_off + size].copy() if with_data else None
                yield Patch(record, data)
    log.info("%s: %d x %d patch positions, %d skipped for nodata", scene.scene_id, n_rows, n_cols, skipped)


def aligned_grid(scenes: Sequence[Scene], reference: int = 0) -> Grid:
    """The common grid of several scenes: the reference scene's grid cropped to
    the footprint they all cover. Patch (row, col) on it is the same ground in
    every scene."""
    return common_grid([s.grid for s in scenes], [s.location or s.scene_id for s in scenes], reference)

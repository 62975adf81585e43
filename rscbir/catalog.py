"""The patch catalog: one row per patch, geometry in EPSG:4326.

:func:`tile_scenes` builds it from scenes; it is written as GeoParquet (opens in
QGIS, DuckDB, geopandas) or GeoJSON. Each row keeps the patch's pixel window,
affine transform, bounds and CRS of the grid it was cut from, so the exact
pixels can be read again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from affine import Affine
from pyproj import Geod
from rasterio.crs import CRS
from rasterio.enums import Resampling

from rscbir.atomic import atomic_path
from rscbir.errors import OutputError, TilingError
from rscbir.grid import Grid
from rscbir.progress import track
from rscbir.scene import Scene
from rscbir.tiling import PatchRecord, TilingConfig, aligned_grid, iter_patches

OUTPUT_CRS = "EPSG:4326"
_GEOD = Geod(ellps="WGS84")
COLUMNS = [
    "patch_id", "scene_id", "date", "row", "col",
    "col_off", "row_off", "width", "height",
    "transform", "crs", "minx", "miny", "maxx", "maxy", "nodata_fraction",
]  # fmt: skip
_FORMATS = {".parquet": "parquet", ".geoparquet": "parquet", ".geojson": "geojson", ".json": "geojson"}


def records_to_frame(records: Iterable[PatchRecord], crs: CRS) -> gpd.GeoDataFrame:
    """A catalog GeoDataFrame (EPSG:4326) from patch records cut from a grid in ``crs``."""
    rows = [
        (
            r.patch_id, r.scene_id, r.date, r.row, r.col,
            int(r.window.col_off), int(r.window.row_off), int(r.window.width), int(r.window.height),
            list(r.transform)[:6], crs.to_string(), *r.bounds, r.nodata_fraction,
        )  # fmt: skip
        for r in records
    ]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for name in ("row", "col", "col_off", "row_off", "width", "height"):
        frame[name] = frame[name].astype("int64")
    for name in ("minx", "miny", "maxx", "maxy", "nodata_fraction"):
        frame[name] = frame[name].astype("float64")
    boxes = shapely.box(frame["minx"], frame["miny"], frame["maxx"], frame["maxy"])
    geometry = gpd.GeoSeries(boxes, crs=crs).to_crs(OUTPUT_CRS)
    return gpd.GeoDataFrame(frame, geometry=geometry.values, crs=OUTPUT_CRS)


def concat(frames: Sequence[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    """Concatenate catalogs (all in EPSG:4326)."""
    if not frames:
        return records_to_frame([], CRS.from_string(OUTPUT_CRS))
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=OUTPUT_CRS)


def catalog_format(path: str | os.PathLike) -> str:
    """'parquet' or 'geojson' from the file suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in _FORMATS:
        raise OutputError(f"{path}: unknown catalog format {suffix!r}; use .parquet or .geojson")
    return _FORMATS[suffix]


def write_catalog(frame: gpd.GeoDataFrame, path: str | os.PathLike) -> Path:
    """Write the catalog atomically (temporary file + rename); format from the suffix."""
    fmt = catalog_format(path)
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            tmp.write_text(frame.to_json(drop_id=True, to_wgs84=True))
    return Path(path)


def read_catalog(path: str | os.PathLike) -> gpd.GeoDataFrame:
    """Read a catalog written by :func:`write_catalog`."""
    if catalog_format(path) == "parquet":
        return gpd.read_parquet(path)
    features = json.loads(Path(path).read_text())["features"]
    frame = gpd.GeoDataFrame.from_features(features, crs=OUTPUT_CRS)
    return frame[[*COLUMNS, "geometry"]]


def affine_of(row: pd.Series) -> Affine:
    """The patch's affine transform from a catalog row."""
    return Affine(*np.asarray(row["transform"], dtype=float)[:6])


def patch_grid(row: pd.Series) -> Grid:
    """The grid of one patch (its own pixels) from a catalog row."""
    return Grid(CRS.from_string(row["crs"]), affine_of(row), int(row["width"]), int(row["height"]))


def metres_from(frame: gpd.GeoDataFrame, lon: float, lat: float) -> np.ndarray:
    """Geodesic distance in metres from (lon, lat) to each patch centre of a catalog (WGS84 ellipsoid)."""
    return geodesic_metres(lon, lat, patch_centres(frame))


def geodesic_metres(lon: float, lat: float, points: np.ndarray) -> np.ndarray:
    """Geodesic distance in metres from (lon, lat) to each (lon, lat) row of ``points`` (WGS84 ellipsoid)."""
    return _GEOD.inv(np.full(len(points), lon), np.full(len(points), lat), points[:, 0], points[:, 1])[2]


def geodesic_areas(geometries: gpd.GeoSeries) -> list[float]:
    """Area in m² of each polygon (any CRS) on the WGS84 ellipsoid."""
    return [abs(_GEOD.geometry_area_perimeter(g)[0]) for g in geometries.to_crs(OUTPUT_CRS)]


def patch_centres(frame: gpd.GeoDataFrame) -> np.ndarray:
    """(n, 2) lon/lat centres of the patch boxes of a catalog (EPSG:4326)."""
    bounds = frame.geometry.bounds.to_numpy()
    return np.column_stack([(bounds[:, 0] + bounds[:, 2]) / 2, (bounds[:, 1] + bounds[:, 3]) / 2])


def tile_scene(
    scene: Scene,
    config: TilingConfig = TilingConfig(),
    grid: Grid | None = None,
    resampling: Resampling = Resampling.bilinear,
    progress: bool | str = False,
) -> gpd.GeoDataFrame:
    """The patch catalog (GeoDataFrame, EPSG:4326) of one scene on ``grid``.

    Examples
    --------
    >>> scene = Scene.open("../shared/data/naip_timeseries/m_4709963_se_14_1_20090818.tif")
    >>> catalog = tile_scene(scene, TilingConfig(patch_size=64))
    """
    grid = grid or scene.grid
    patches = iter_patches(scene, config, grid, with_data=False, resampling=resampling)
    if progress:
        n_rows, n_cols = config.layout(grid)
        patches = track(patches, n_rows * n_cols, scene.scene_id, "patches", progress)
    return records_to_frame((p.record for p in patches), grid.crs)


def tile_scenes(
    scenes: Sequence[Scene],
    config: TilingConfig = TilingConfig(),
    align: bool = False,
    resampling: Resampling = Resampling.bilinear,
    progress: bool | str = False,
) -> gpd.GeoDataFrame:
    """One catalog for several scenes; with ``align`` all share the common grid.

    With ``align=True`` every scene is read onto the first scene's grid cropped
    to the footprint all scenes cover, so equal (row, col) means equal ground.
    """
    ids = [s.scene_id for s in scenes]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise TilingError(f"scene ids {duplicates} occur twice; give each scene its own id")
    grid = aligned_grid(scenes) if align else None
    return concat([tile_scene(s, config, grid, resampling, progress) for s in scenes])

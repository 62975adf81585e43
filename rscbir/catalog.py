"""The patch catalog: one row per patch, geometry in EPSG:4326.

Written as GeoParquet (opens in QGIS, DuckDB, geopandas) or GeoJSON. Each row
keeps the patch's pixel window, affine transform, bounds and CRS of the grid it
was cut from, so the exact pixels can be read again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from rasterio.crs import CRS

from rscbir.atomic import atomic_path
from rscbir.errors import OutputError

if TYPE_CHECKING:
    from rscbir.tiling import PatchRecord

OUTPUT_CRS = "EPSG:4326"
COLUMNS = [
    "patch_id", "scene_id", "date", "row", "col",
    "col_off", "row_off", "width", "height",
    "transform", "crs", "minx", "miny", "maxx", "maxy", "nodata_fraction",
]  # fmt: skip
_FORMATS = {".parquet": "parquet", ".geoparquet": "parquet", ".geojson": "geojson", ".json": "geojson"}


def records_to_frame(records: Iterable["PatchRecord"], crs: CRS) -> gpd.GeoDataFrame:
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


def window_of(row: pd.Series) -> tuple[int, int, int, int]:
    """(col_off, row_off, width, height) of a catalog row."""
    return int(row["col_off"]), int(row["row_off"]), int(row["width"]), int(row["height"])


def affine_of(row: pd.Series):
    """The patch's affine transform from a catalog row."""
    from affine import Affine

    return Affine(*np.asarray(row["transform"], dtype=float)[:6])

"""Embeddings in: an index built from a GeoParquet file of vectors another tool (or ``rscbir export``) made.

One row per patch: a geometry (GeoParquet, any CRS, polygons or points), a vector column (fixed-size or plain lists
of numbers, every row the same length) and, when present, ``scene_id``, ``datetime``/``date``, grid ``row``/``col``.
The vectors are indexed as they are (no PCA, no centring: they are someone else's finished product), so search,
relevance feedback and ``rscbir serve`` work on them. A file written by ``rscbir export`` carries the index's model,
tiling, grid and scene records in its metadata: the imported index then answers exactly as the exported one did,
and change between dates and imagery work as before. Points become square footprints of the median spacing between
neighbouring points, so a click or a ``--lonlat`` query finds them.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from rscbir.errors import IndexFileError, OutputError
from rscbir.index.build import write_generation
from rscbir.index.layout import STAGING
from rscbir.index.manifest import IndexSettings
from rscbir.index.parquet import WINDOW
from rscbir.index.reader import Index
from rscbir.index.writers import StagedScene
from rscbir.models.config import ModelConfig, file_sha256

IMPORTED = "imported"  # ModelConfig.backbone of vectors no rscbir model made: nothing can embed a new image like them


@dataclass
class ImportedVectors:
    """What :class:`rscbir.index.writers.StagedScene` needs of a store: one scene's vectors and catalog rows."""

    vectors: np.ndarray
    catalog: gpd.GeoDataFrame


def import_embeddings(source: str | os.PathLike, path: str | os.PathLike, column: str | None = None,
                      index_type: str = "auto", augment: int | None = None) -> Index:  # fmt: skip
    """Create the index ``path`` from the GeoParquet file ``source`` (vector column ``column``: default the one the
    file's ``rscbir`` metadata names, else its only list column). ``augment``: database-side augmentation, by default the
    exporting index's (0 for other files). Nothing is written when the file is refused."""
    source, path = Path(source), Path(path)
    if not source.is_file():
        raise IndexFileError(f"{source}: no such file")
    if path.exists() and any(path.iterdir()):
        raise OutputError(f"{path}: exists and is not empty; import into a new folder")
    if not path.parent.is_dir():
        raise OutputError(f"{path}: parent folder {path.parent} does not exist; create it first")
    schema, provenance = _read(source)
    column = _vector_column(schema, column or provenance.get("vector_column"), source)
    vectors = _vectors(pq.read_table(source, columns=[column])[column], source, column)
    frame = _catalog(schema.names, column, source)
    config = _model(provenance, source, vectors.shape[1], digest := file_sha256(source))
    grid = provenance.get("grid")
    records = {s["scene_id"]: s for s in provenance.get("scene_records", [])}
    staged = []
    for scene_id, rows in frame.groupby("scene_id", sort=False).indices.items():
        catalog = frame.iloc[rows].reset_index(drop=True)
        record = records.get(scene_id) or {"scene_id": scene_id, "location": str(source.resolve()), "sources": [],
                                           "date": _one_date(catalog, scene_id, source), "date_source": f"imported from {source.name}"}  # fmt: skip
        record = {**record, "content_hash": digest, "patches": len(rows)}
        staged.append(StagedScene(record, ImportedVectors(vectors[rows], catalog), path / STAGING))
    augment = int(provenance.get("augment") or 0) if augment is None else int(augment)
    settings = IndexSettings(config.fingerprint(), provenance.get("tiling") or {"imported": source.name}, None, 0.0, augment, False,
                             index_type, provenance.get("dtype", "float32"))  # fmt: skip
    created = not path.exists()
    try:
        path.mkdir(exist_ok=True)
        from rscbir.grid import Grid

        return write_generation(path, None, staged, settings, config, Grid.from_dict(grid) if grid else None)
    except BaseException:
        if created:
            shutil.rmtree(path, ignore_errors=True)
        raise


def _read(source: Path) -> tuple[pa.Schema, dict]:
    """The file's schema and rscbir's provenance in its metadata (empty for other tools' files)."""
    try:
        schema = pq.read_schema(source)
    except (OSError, pa.ArrowException) as exc:
        raise IndexFileError(f"{source}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    meta = schema.metadata or {}
    try:
        provenance = json.loads(meta.get(b"rscbir", b"{}"))
    except ValueError:
        provenance = {}
    return schema, provenance


def _vector_column(schema: pa.Schema, wanted: str | None, source: Path) -> str:
    lists = [f.name for f in schema if pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type)
             or pa.types.is_large_list(f.type)]  # fmt: skip
    if wanted:
        if wanted not in schema.names:
            raise IndexFileError(f"{source}: no column {wanted!r}; columns: {', '.join(schema.names)}")
        return wanted
    if len(lists) != 1:
        found = f"list columns {', '.join(lists)}" if lists else "no list column"
        raise IndexFileError(f"{source}: {found}; name the vector column with --vector-column (columns: {', '.join(schema.names)})")
    return lists[0]


def _vectors(values: pa.ChunkedArray, source: Path, column: str) -> np.ndarray:
    """(n, d) float32; a ragged or non-numeric column is refused with the row that breaks it."""
    values = values.combine_chunks()
    if not (pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type) or pa.types.is_large_list(values.type)):
        raise IndexFileError(f"{source}: column {column!r} holds {values.type}, not vectors (lists of numbers)")
    if not (pa.types.is_floating(values.type.value_type) or pa.types.is_integer(values.type.value_type)):
        raise IndexFileError(f"{source}: column {column!r} holds lists of {values.type.value_type}, not numbers")
    if values.null_count:
        raise IndexFileError(f"{source}: column {column!r} has {values.null_count} empty rows; every patch needs a vector")
    if pa.types.is_fixed_size_list(values.type):
        dim = values.type.list_size
        flat = values.flatten()
    else:
        lengths = np.asarray(values.value_lengths())
        dim = int(lengths[0]) if len(lengths) else 0
        if len(lengths) and (lengths != dim).any():
            bad = int(np.flatnonzero(lengths != dim)[0])
            raise IndexFileError(f"{source}: ragged vectors in {column!r}: row {bad} has {lengths[bad]} values, row 0 has {dim}")
        flat = values.flatten()
    if not dim:
        raise IndexFileError(f"{source}: column {column!r} holds empty vectors")
    vectors = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)
    if not np.isfinite(vectors).all():
        bad = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
        raise IndexFileError(f"{source}: row {bad} of {column!r} is not finite (NaN or inf)")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if np.abs(norms - 1).max(initial=0) < 1e-2:  # unit vectors already (to their storage's precision): kept as they are
        return vectors
    return vectors / np.maximum(norms, 1e-12)  # cosine similarity, as every rscbir index ranks


def _catalog(columns: list[str], column: str, source: Path) -> gpd.GeoDataFrame:
    """The patch rows: EPSG:4326 footprints, scene ids, dates, grid cells and ``scene:row:col`` patch ids."""
    try:
        frame = gpd.read_parquet(source, columns=[c for c in columns if c != column])
    except Exception as exc:  # no geometry column, or one geopandas cannot decode
        raise IndexFileError(f"{source}: not GeoParquet with a geometry column ({str(exc).splitlines()[0]})") from None
    if frame.crs is None:
        raise IndexFileError(f"{source}: the geometry column has no CRS; write the file as GeoParquet with one")
    frame = frame.to_crs("EPSG:4326")
    if (frame.geometry.is_empty | frame.geometry.isna()).any():
        raise IndexFileError(f"{source}: {int((frame.geometry.is_empty | frame.geometry.isna()).sum())} rows have no geometry")
    kinds = set(frame.geom_type)
    if kinds <= {"Point"}:
        frame = frame.set_geometry(_squares(frame.geometry))
    elif not kinds <= {"Polygon", "MultiPolygon"}:
        raise IndexFileError(f"{source}: geometries must be polygons or points, not {', '.join(sorted(kinds))}")
    out = gpd.GeoDataFrame({"scene_id": frame["scene_id"].astype(str) if "scene_id" in frame else source.stem}, geometry=frame.geometry.values,
                           crs="EPSG:4326")  # fmt: skip
    out["date"] = _dates(frame)
    if "row" in frame and "col" in frame:
        out["row"], out["col"] = frame["row"].to_numpy(np.int64), frame["col"].to_numpy(np.int64)
    else:  # no grid cell: each patch its own cell
        out["row"] = out.groupby("scene_id").cumcount().to_numpy(np.int64)
        out["col"] = 0
    out["patch_id"] = out["scene_id"] + ":" + out["row"].astype(str) + ":" + out["col"].astype(str)
    if out["patch_id"].duplicated().any():
        raise IndexFileError(f"{source}: patch {out['patch_id'][out['patch_id'].duplicated()].iloc[0]} occurs twice (same scene, row and col)")
    if "patch_id" in frame and not (frame["patch_id"].astype(str) == out["patch_id"]).all():
        out["source_id"] = frame["patch_id"].astype(str)
    window = [c for c in WINDOW if c in frame]  # written by `rscbir export`: where each patch lies in its scene's pixels
    for name in window:
        out[name] = frame[name].to_numpy()
    if "nodata_fraction" not in out:
        out["nodata_fraction"] = 0.0
    extra = ["source_id"] if "source_id" in out else []
    return out[["patch_id", "scene_id", "date", "row", "col", *[c for c in WINDOW if c in out], *extra, "geometry"]]


def _dates(frame: pd.DataFrame) -> pd.Series:
    for name in ("datetime", "date"):
        if name in frame:
            when = pd.to_datetime(frame[name], errors="coerce", utc=True)
            return when.dt.strftime("%Y-%m-%d").where(when.notna(), None)
    return pd.Series([None] * len(frame), index=frame.index, dtype=object)


def _one_date(catalog: pd.DataFrame, scene_id: str, source: Path) -> str | None:
    dates = set(catalog["date"].dropna())
    if len(dates) > 1:
        raise IndexFileError(f"{source}: scene {scene_id!r} has rows of {len(dates)} dates; give each date its own scene_id")
    return dates.pop() if dates else None


def _squares(points: gpd.GeoSeries) -> np.ndarray:
    """Square footprints centred on points, as wide as the median distance to the nearest other point."""
    from scipy.spatial import cKDTree

    xy = shapely.get_coordinates(points.values)
    side = 1e-4
    if len(xy) > 1:
        sample = xy[np.random.default_rng(0).permutation(len(xy))[:10_000]]
        distances = cKDTree(xy).query(sample, k=2)[0][:, 1]
        positive = distances[distances > 0]
        side = float(np.median(positive)) if len(positive) else side
    half = side / 2
    return shapely.box(xy[:, 0] - half, xy[:, 1] - half, xy[:, 0] + half, xy[:, 1] + half)


def _model(provenance: dict, source: Path, dim: int, digest: str) -> ModelConfig:
    """The exporting index's model when the file says it (its vectors stay comparable), else a record of the file."""
    if provenance.get("model"):
        return ModelConfig.from_dict(provenance["model"])
    return ModelConfig(backbone=IMPORTED, weights=str(source.resolve()), weights_sha256=digest, pooling="none",
                       input_bands=(), rgb=(), input_size=None, dim=dim)  # fmt: skip


__all__ = ["IMPORTED", "import_embeddings"]

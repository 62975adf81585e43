"""An index folder opened for reading: :class:`Index`, its segments, lookups and search."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely
from geopandas.array import from_shapely

from rscbir.dates import normalise_date
from rscbir.errors import IndexFileError, QueryError
from rscbir.grid import Grid
from rscbir.index.layout import check_sizes, read_manifest
from rscbir.index.manifest import IndexSettings, Manifest, SceneRecord
from rscbir.index.rows import joined
from rscbir.index.search import search_segments
from rscbir.index.segment import Segment, by_segment, catalog_rows, read_segment_catalog, vector_rows
from rscbir.models.config import ModelConfig
from rscbir.models.whitening import PCAWhitening, PlaceWhitening
from rscbir.tiling import TilingConfig

WGS84 = pyproj.CRS.from_epsg(4326)  # parsed once: every query result carries it


@dataclass
class Index:
    """An index folder opened for reading (and appending with :func:`build_index`).

    The index is a manifest plus immutable segments: an append adds a segment and never
    rewrites the others; :func:`compact_index` merges them. Ids run through the segments in
    manifest order: id ``i`` is row ``i`` of :attr:`catalog` and of :attr:`vectors`.
    Queries read a few records with ``pread`` (:meth:`patches`, :meth:`rows_of`, :meth:`in_box`,
    :meth:`vector_rows`); :attr:`catalog` reads every row and is for whole-index work.
    """

    path: Path
    manifest: Manifest
    segments: list[Segment]

    @property
    def vectors(self) -> np.ndarray:
        """The patches' own embeddings (after PCA): change, feedback marks, query by patch."""
        return joined([s.vectors for s in self.segments])

    @property
    def augmented(self) -> np.ndarray | None:
        """Database-side augmented vectors (``--augment``), what FAISS searches; None without."""
        if any(s.augmented is None for s in self.segments):
            return None
        return joined([s.augmented for s in self.segments])

    @property
    def search_vectors(self) -> np.ndarray:
        """The vectors FAISS ranks: augmented ones when the index was built with ``--augment``."""
        return joined([s.search_vectors for s in self.segments])

    @functools.cached_property
    def catalog(self) -> gpd.GeoDataFrame:
        """Every patch row (GeoParquet of each segment) with its id in ``vector``: read on first use, then kept."""
        frames = []
        for segment in self.segments:
            frame = read_segment_catalog(self.path, segment.record)
            frame["vector"] = np.arange(segment.offset, segment.offset + len(frame), dtype=np.int64)
            frames.append(frame)
        catalog = frames[0] if len(frames) == 1 else gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs="EPSG:4326")
        return catalog

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike, search: bool = True) -> "Index":
        """Open ``path``; raises :class:`IndexFileError` naming the file when it is not a complete index.

        Vectors and IVF/Flat FAISS files are memory-mapped (HNSW graphs read whole) and lookups opened for
        ``pread``: opening reads no patch record, whatever the size. ``search=False`` reads no FAISS file
        (export, checks): such an index cannot search.
        """
        path = Path(path)
        manifest = read_manifest(path)
        check_sizes(path, manifest)
        segments, offset = [], 0
        for record in manifest.segments:
            segments.append(Segment.open(path, record, offset, search))
            offset += segments[-1].count
        if offset != manifest.count:
            raise IndexFileError(f"{path}: segments hold {offset} patches, the manifest says {manifest.count}; rebuild it")
        return cls(path, manifest, segments)

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.manifest.model)

    @property
    def pca(self) -> PCAWhitening | None:
        name = self.manifest.files.get("pca")
        return PCAWhitening.load(self.path / name) if name else None

    @property
    def places(self) -> PlaceWhitening | None:
        """The within-place whitening the vectors went through (an aligned index of 2+ dates), else None."""
        name = self.manifest.files.get("places")
        return PlaceWhitening.load(self.path / name) if name else None

    @property
    def tiling(self) -> TilingConfig:
        return TilingConfig.from_dict(self.manifest.tiling)

    @property
    def grid(self) -> Grid | None:
        """The common grid of an aligned index (``--align``), else None."""
        doc = self.manifest.grid
        return Grid.from_dict(doc) if doc else None

    @property
    def settings(self) -> IndexSettings:
        """How the index turns patches into vectors: what an append must match."""
        return self.manifest.settings

    def scene_record(self, scene_id: str) -> SceneRecord:
        """The manifest record of an indexed scene (date, content hash; ``doc``: files, bands, scaling)."""
        record = self.manifest.scene(scene_id)
        if record is None:
            raise IndexFileError(f"{self.path}: no scene {scene_id!r}; indexed: {', '.join(s.scene_id for s in self.manifest.scenes)}")
        return record

    def scenes_on(self, dates: Sequence[str]) -> list[SceneRecord]:
        """The scene record of each of two or more distinct dates of an aligned index (for change), in date order."""
        if not self.manifest.grid:
            raise QueryError(f"{self.path} was not indexed with --align; change needs every date on one grid")
        wanted = sorted(normalise_date(d) for d in dates)  # earliest first, however they were given
        if len(set(wanted)) != len(wanted):
            raise QueryError(f"dates {', '.join(wanted)}: give two different dates to compare")
        records = []
        for date in wanted:
            found = [s for s in self.manifest.scenes if s.date == date]
            if not found:
                have = sorted({s.date or "undated" for s in self.manifest.scenes})
                raise QueryError(f"no scene of date {date} in {self.path}; dates indexed: {', '.join(have)}")
            records.append(found[0])
        return records

    def __len__(self) -> int:
        return self.manifest.count

    def rows_of(self, patch_ids: Sequence[str]) -> np.ndarray:
        """Ids of ``patch_ids`` (``scene:row:col``), -1 for one not in the index: a binary search in its scene's ids."""
        found = np.full(len(patch_ids), -1, dtype=np.int64)
        for n, patch_id in enumerate(patch_ids):
            scene_id, _, rest = str(patch_id).rpartition(":")
            scene_id, _, row = scene_id.rpartition(":")
            if not (row.lstrip("-").isdigit() and rest.lstrip("-").isdigit()):
                continue
            for segment in self._segments_of(scene_id):
                local = segment.lookup.find(scene_id, int(row), int(rest))
                if local >= 0:
                    found[n] = segment.offset + local
                    break
        return found

    def _segments_of(self, scene_id: str) -> list[Segment]:
        return [s for s in self.segments if scene_id in s.lookup.ranges]

    def patches(self, ids: Sequence[int]) -> gpd.GeoDataFrame:
        """patch_id, scene_id, date, row, col and footprint (EPSG:4326) of ``ids``, in that order, read from the lookups."""
        ids = np.asarray(ids, dtype=np.int64)
        scene, row, col = (np.zeros(len(ids), np.int64) for _ in range(3))
        names, geometry = np.empty(len(ids), object), np.empty(len(ids), object)
        for segment, at, local in by_segment(self.segments, ids):
            records = segment.lookup.patches[local]
            names[at] = np.asarray(segment.lookup.scene_ids, dtype=object)[records["scene"]]
            row[at], col[at] = records["row"], records["col"]
            corners = records["corners"].reshape(-1, 4, 2)
            geometry[at] = shapely.polygons(np.concatenate([corners, corners[:, :1]], axis=1))
        dates = self._scene_dates
        table = pd.DataFrame({
            "patch_id": np.array([f"{s}:{r}:{c}" for s, r, c in zip(names, row, col)], dtype=object),
            "scene_id": names,
            "date": np.array([dates.get(s) for s in names], dtype=object),
            "row": row,
            "col": col,
            "geometry": from_shapely(geometry, crs=WGS84),
        })  # fmt: skip
        return gpd.GeoDataFrame(table, geometry="geometry")  # a third faster than passing geometry= and crs= (0.5 vs 0.8 ms)

    def vector_rows(self, ids: Sequence[int], search: bool = False) -> np.ndarray:
        """``(len(ids), dim)`` float32 stored vectors of ``ids`` (``search``: the augmented ones FAISS ranks), read
        with ``pread``: a query's few rows without mapping gigabytes of vectors into the process."""
        return vector_rows(self.segments, ids, self.manifest.dim, search)

    def catalog_rows(self, ids: Sequence[int]) -> gpd.GeoDataFrame:
        """Full catalog rows of ``ids`` (pixel window, transform, CRS ...), in that order: read from the row groups
        of the segments' GeoParquet that hold them, unless the whole catalog is already loaded."""
        ids = np.asarray(ids, dtype=np.int64)
        if "catalog" in self.__dict__:
            return self.catalog.iloc[ids].reset_index(drop=True)
        parts, where = [], []
        for segment, mine, local in by_segment(self.segments, ids):
            parts.append(catalog_rows(self.path / segment.record.files["catalog"], local))
            parts[-1]["vector"] = local + segment.offset
            where.append(mine)
        if not parts:
            return self.patches(ids).iloc[:0]
        frame = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry", crs="EPSG:4326")
        return frame.iloc[np.argsort(np.concatenate(where))].reset_index(drop=True)

    @functools.cached_property
    def _scene_dates(self) -> dict:
        return {s.scene_id: s.date for s in self.manifest.scenes}

    def centres(self, ids: Sequence[int]) -> np.ndarray:
        """(n, 2) lon/lat centres of the patches ``ids``."""
        out = np.zeros((len(ids), 2))
        for segment, mine, local in by_segment(self.segments, np.asarray(ids)):
            out[mine] = segment.lookup.centres(local)
        return out

    def in_box(self, bbox: tuple[float, float, float, float]) -> np.ndarray:
        """Sorted ids of the patches whose footprint box meets the lon/lat ``bbox`` (west, south, east, north)."""
        found = [s.offset + s.lookup.in_box(*bbox) for s in self.segments]
        return np.concatenate(found) if found else np.empty(0, np.int64)

    def covering(self, lon: float, lat: float) -> np.ndarray:
        """Ids of the patches whose footprint covers (lon, lat)."""
        found = [s.offset + s.lookup.covering(lon, lat) for s in self.segments]
        return np.concatenate(found) if found else np.empty(0, np.int64)

    def within(self, lon: float, lat: float, metres: float) -> np.ndarray:
        """Ids of the patches whose centre lies within ``metres`` of (lon, lat)."""
        found = [s.offset + s.lookup.within(lon, lat, metres) for s in self.segments]
        return np.concatenate(found) if found else np.empty(0, np.int64)

    def scene_mask(self, scene_ids: Sequence[str]) -> np.ndarray:
        """Bool mask over all ids: the patches of ``scene_ids``."""
        return np.concatenate([s.lookup.scene_mask(scene_ids) for s in self.segments])

    def scene_bounds(self) -> dict[str, tuple[float, float, float, float]]:
        """Each scene's (west, south, east, north): the box of its patch footprints."""
        return {scene: box for s in self.segments for scene, box in s.lookup.scene_bounds.items()}

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) of every patch footprint."""
        boxes = np.array([s.lookup.bounds for s in self.segments if s.count], dtype=float).reshape(-1, 4)
        if not len(boxes):
            return (np.nan,) * 4
        return (float(boxes[:, 0].min()), float(boxes[:, 1].min()), float(boxes[:, 2].max()), float(boxes[:, 3].max()))

    def co_located(self, before_id: str, after_id: str) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, np.ndarray, np.ndarray]:
        """Catalog rows and stored vectors of the patches indexed in both scenes at the same (row, col).

        Returns (before rows, after rows, before vectors, after vectors), row-aligned.
        """
        a, b = (self.catalog[self.catalog["scene_id"] == s].set_index(["row", "col"]) for s in (before_id, after_id))
        common = a.index.intersection(b.index)
        rows_a = gpd.GeoDataFrame(a.loc[common].reset_index(), geometry="geometry", crs="EPSG:4326")
        rows_b = gpd.GeoDataFrame(b.loc[common].reset_index(), geometry="geometry", crs="EPSG:4326")
        va = np.asarray(self.vectors[rows_a["vector"].to_numpy()], dtype=np.float32)
        vb = np.asarray(self.vectors[rows_b["vector"].to_numpy()], dtype=np.float32)
        return rows_a, rows_b, va, vb

    # ------------------------------------------------------------------- search
    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per query row, FAISS style; ``allowed`` is a bool mask of ids.

        Each segment is searched and the hits merged by score, so the answer equals one index's
        over all the vectors. ``allowed`` filters before ranking (a FAISS ID selector, or exact
        scoring of the allowed rows when they are few), so a filter returns ``k`` hits whenever
        ``k`` allowed patches exist. Missing results are -1.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        n = len(self)
        if n == 0:
            raise IndexFileError(f"{self.path}: the index is empty; add scenes with `rscbir index build`")
        k = min(k, n if allowed is None else int(np.count_nonzero(allowed)))
        if k <= 0:
            return np.full((len(queries), 0), -np.inf, dtype=np.float32), np.full((len(queries), 0), -1, dtype=np.int64)
        return search_segments(self.segments, queries, k, allowed)


__all__ = ["Index", "WGS84"]

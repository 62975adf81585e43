"""The on-disk index folder: a manifest plus immutable segments (catalog + embeddings + FAISS), written atomically.

Layout of ``INDEX_DIR``::

    index.json                          manifest: model fingerprint, tiling, scenes, segments, checksums
    segment-000003-catalog.parquet      the segment's patch rows (GeoParquet, row groups of 64k)
    segment-000003-vectors.npy          (n, dim) embeddings: appends, exact re-ranking, query by patch
    segment-000003-augmented.npy        database-side augmented vectors (what FAISS searches, --augment)
    segment-000003-faiss.index          the segment's FAISS index (inner product on L2-normalised vectors)
    segment-000003-lookup.npy, -cells.npy   what a query needs of the catalog (rscbir.lookup)
    pca-000001.npz, trained-000001.faiss   shared: the PCA, the trained empty index of IVF/PQ types
    .staging/                           per-scene embedding stores of a run in progress (resume)

An append embeds the new scenes into one new segment and swaps ``index.json``;
it never rewrites an existing segment. Ids run through the segments in manifest
order; a search asks every segment and merges by score. Opening reads no patch
(vectors and IVF lists are memory-mapped, HNSW graphs read whole), a query reads
its few rows and lookup records with ``pread``, and the whole catalog is loaded
only when asked for (:attr:`Index.catalog`: change detection). :func:`compact_index`
merges segments (automatically past ``MAX_SEGMENTS``). Every change writes its
new files, fsyncs them, and only then replaces ``index.json`` (temporary file +
rename): a kill -9 at any moment leaves the previous complete index readable;
the next run removes files no manifest names and reuses every scene already
embedded into ``.staging/``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import errno
import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import faiss
import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pyproj
import shapely
from geopandas.array import from_shapely

from rscbir.atomic import atomic_path, fsync_path, settle_folder
from rscbir.catalog import read_catalog
from rscbir.errors import IndexFileError, InvalidSceneError, ModelMismatchError, QueryError
from rscbir.grid import Grid, common_grid
from rscbir.lookup import SegmentLookup
from rscbir.rows import NpyRows
from rscbir.manifest import FORMAT, MANIFEST, check_sizes, data_files, file_records, read_manifest, segment_records, shared_files
from rscbir.models.config import ModelConfig
from rscbir.models.whitening import PCAWhitening
from rscbir.rerank import augment_database, normalise
from rscbir.scene import Scene, normalise_date
from rscbir.store import EmbeddingStore, EmbedOptions
from rscbir.tiling import TilingConfig, aligned_grid

if TYPE_CHECKING:  # reading an index needs no deep-learning framework: the model code loads only to embed
    from rscbir.embed import Runner
    from rscbir.models.features import FeatureModel

log = logging.getLogger(__name__)

VERSION = 2  # 2: segments; version-1 indexes open as one segment
EXACT_LIMIT = 100_000  # up to this many vectors "auto" keeps exact search
# Database-side augmentation with each patch's 5 nearest (chosen among 3, 5, 10 on the design half of RSSCN7):
# with query expansion, mAP 0.569 -> 0.610 on all of RSSCN7 (benchmarks/results.md).
DEFAULT_AUGMENT = 5
STAGING = ".staging"
WGS84 = pyproj.CRS.from_epsg(4326)  # parsed once: every query result carries it


GRAPH_LIMIT = 1_000_000  # past this many vectors "auto" stops adding HNSW graphs: 256 MiB of RAM per million, each


def auto_index_type(count: int) -> str:
    """FAISS factory string for ``count`` vectors: exact up to 100k, HNSW32 up to 1M, IVF-SQ8 beyond.

    Measured at 1M (benchmarks/bench_index_types.py, docs/scaling.md): HNSW32 holds its graph in memory (272 MiB opened, 748 MiB
    file); IVF4096,SQ8 opens in 2 MiB from a 132 MiB file, builds faster, and with the candidates
    re-ranked on the stored vectors reaches the same recall at a larger nprobe.
    """
    if count <= EXACT_LIMIT:
        return "Flat"
    if count <= GRAPH_LIMIT:
        return "HNSW32"
    nlist = int(min(65536, max(1024, 2 ** round(math.log2(4 * math.sqrt(count))))))
    return f"IVF{nlist},SQ8"


def train_faiss_probe(dim: int, factory: str) -> faiss.Index:
    """An empty FAISS index of type ``factory`` (inner product); :class:`IndexFileError` for a type FAISS cannot build."""
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise IndexFileError(f"FAISS cannot build index type {factory!r} ({str(exc).splitlines()[-1]}); try Flat, HNSW32 or IVF1024,PQ32") from None


def train_faiss(vectors: np.ndarray, factory: str) -> faiss.Index:
    """An empty FAISS index of type ``factory``, trained on a sample of up to 200k ``vectors`` when the type needs it."""
    n, dim = vectors.shape
    index = train_faiss_probe(dim, factory)
    if not index.is_trained:
        needed = faiss.extract_index_ivf(index).nlist if "IVF" in factory else 256
        if n < needed:
            raise IndexFileError(f"index type {factory!r} needs at least {needed} vectors to train, the index has {n}; use Flat")
        sample = vectors[np.sort(np.random.default_rng(0).permutation(n)[:200_000])]
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return index


def build_faiss(vectors: np.ndarray, factory: str, chunk: int = 65536) -> faiss.Index:
    """A FAISS index (inner product) over float vectors, trained when the type needs it."""
    index = train_faiss(vectors, factory)
    for start in range(0, len(vectors), chunk):
        index.add(np.ascontiguousarray(vectors[start : start + chunk], dtype=np.float32))
    tune_search(index)
    return index


def tune_search(index: faiss.Index) -> None:
    """Search-time knobs for recall >= 0.95 at 10 (benchmarks/bench_query.py, docs/scaling.md).

    HNSW's candidate list grows with the index: efSearch 128 holds recall@10 0.97 at 300k augmented
    vectors but gives 0.85-0.87 at 1M, where 512 gives 0.95-0.96 for 0.45 ms a query.
    """
    if isinstance(index, faiss.IndexHNSW):
        wanted = int(min(1024, max(128, 128 * index.ntotal / 250_000)))
        index.hnsw.efSearch = max(index.hnsw.efSearch, wanted)
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return
    ivf.nprobe = max(ivf.nprobe, min(ivf.nlist, max(64, ivf.nlist // 64)))


def scene_content_hash(scene: Scene) -> str:
    """BLAKE2b of the scene's files (names and bytes) and band selection."""
    digest = hashlib.blake2b(digest_size=16)
    for path in scene.paths:
        digest.update(Path(path).name.encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
    digest.update(",".join(scene.band_names).encode())
    return digest.hexdigest()


def _grid_key(grid: Grid | None) -> str:
    if grid is None:
        return "native"
    text = f"{grid.crs.to_wkt()}|{tuple(grid.transform)[:6]}|{grid.width}x{grid.height}"
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def _fingerprint_key(config: ModelConfig, tiling: TilingConfig, options: EmbedOptions) -> str:
    text = json.dumps([config.fingerprint(), tiling.to_dict(), options.dtype.value], sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


class StackedRows:
    """Rows of several ``(n_i, dim)`` arrays (the segments' memory-mapped files) read as one ``(sum n_i, dim)``
    array: integer, slice and boolean indexing gather from the parts without joining them in memory."""

    def __init__(self, parts: Sequence[np.ndarray]) -> None:
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.dtype = self.parts[0].dtype
        self.shape = (int(self.offsets[-1]), self.parts[0].shape[1])
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            row = int(key) + (len(self) if key < 0 else 0)
            part = int(np.searchsorted(self.offsets, row, side="right")) - 1
            return self.parts[part][row - self.offsets[part]]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                pieces = [p[max(start - o, 0) : max(min(stop - o, len(p)), 0)] for p, o in zip(self.parts, self.offsets)]
                pieces = [np.asarray(piece) for piece in pieces if len(piece)]
                return np.concatenate(pieces) if pieces else np.empty((0, self.shape[1]), self.dtype)
            key = np.arange(start, stop, step)
        rows = np.asarray(key)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = np.where(rows < 0, rows + len(self), rows)
        out = np.empty((len(rows), self.shape[1]), self.dtype)
        which = np.searchsorted(self.offsets, rows, side="right") - 1
        for part in np.unique(which):
            mine = which == part
            local = rows[mine] - self.offsets[part]
            order = np.argsort(local)  # memory maps read fastest in file order
            out[np.flatnonzero(mine)[order]] = self.parts[part][local[order]]
        return out

    def __array__(self, dtype=None, copy=None):
        whole = np.concatenate([np.asarray(p) for p in self.parts])
        return whole.astype(dtype, copy=False) if dtype is not None else whole


@dataclass
class Segment:
    """One immutable part of an index: its catalog rows, vectors and FAISS index; ``offset`` is the global id
    of its first row (ids run through the segments in manifest order)."""

    id: int
    offset: int
    vectors: np.ndarray
    augmented: np.ndarray | None
    faiss_index: faiss.Index
    record: dict
    lookup: SegmentLookup
    vector_file: NpyRows  # the same rows read with pread: a query's few rows without mapping the file
    search_file: NpyRows

    @property
    def count(self) -> int:
        return len(self.vectors)

    @property
    def search_vectors(self) -> np.ndarray:
        return self.augmented if self.augmented is not None else self.vectors


def _read_flags(record: dict) -> int:
    """How to read a segment's FAISS file: memory-mapped, except graphs. An IVF search reads a few contiguous lists
    and a flat one the whole file in order, but an HNSW search jumps between thousands of vectors: through a map
    on a cold page cache each jump read megabytes around it (kernel read-around), so HNSW files are read whole."""
    return 0 if (record.get("index_type") or "").startswith("HNSW") else faiss.IO_FLAG_MMAP_IFC


def _corrupt(target: Path, exc: BaseException) -> IndexFileError:
    """The error for an index file that cannot be read: the file, the first line of the cause, what to do."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return IndexFileError(f"{target}: unreadable or corrupt ({first}); rebuild the index with `rscbir index`")


UNREADABLE = (OSError, ValueError, KeyError, RuntimeError, pa.ArrowException)  # what numpy, FAISS and Arrow raise for a bad file


def _read_segment_catalog(path: Path, record: dict) -> gpd.GeoDataFrame:
    target = path / record["files"]["catalog"]
    try:
        return read_catalog(target)
    except UNREADABLE as exc:
        raise _corrupt(target, exc) from None


def _catalog_rows(target: Path, local: np.ndarray) -> gpd.GeoDataFrame:
    """Rows ``local`` of a segment's GeoParquet catalog, in that order, reading only the row groups that hold them."""
    try:
        parquet = pq.ParquetFile(target)
        ends = np.cumsum([parquet.metadata.row_group(g).num_rows for g in range(parquet.metadata.num_row_groups)])
        groups = np.searchsorted(ends, local, side="right")
        tables, firsts = [], []
        for group in np.unique(groups):
            first = int(ends[group - 1]) if group else 0
            tables.append(parquet.read_row_group(int(group)).take(pa.array(local[groups == group] - first)))
            firsts.append(np.flatnonzero(groups == group))
        table = pa.concat_tables(tables).replace_schema_metadata(parquet.schema_arrow.metadata)
        frame = gpd.GeoDataFrame.from_arrow(table)
    except UNREADABLE as exc:
        raise _corrupt(target, exc) from None
    return frame.iloc[np.argsort(np.concatenate(firsts))].reset_index(drop=True)


def _joined(parts: list):
    return parts[0] if len(parts) == 1 else StackedRows(parts)


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
    manifest: dict
    segments: list[Segment]

    @property
    def vectors(self) -> np.ndarray:
        """The patches' own embeddings (after PCA): change, feedback marks, query by patch."""
        return _joined([s.vectors for s in self.segments])

    @property
    def augmented(self) -> np.ndarray | None:
        """Database-side augmented vectors (``--augment``), what FAISS searches; None without."""
        if any(s.augmented is None for s in self.segments):
            return None
        return _joined([s.augmented for s in self.segments])

    @property
    def search_vectors(self) -> np.ndarray:
        """The vectors FAISS ranks: augmented ones when the index was built with ``--augment``."""
        return _joined([s.search_vectors for s in self.segments])

    @functools.cached_property
    def catalog(self) -> gpd.GeoDataFrame:
        """Every patch row (GeoParquet of each segment) with its id in ``vector``: read on first use, then kept."""
        frames = []
        for segment in self.segments:
            frame = _read_segment_catalog(self.path, segment.record)
            frame["vector"] = np.arange(segment.offset, segment.offset + len(frame), dtype=np.int64)
            frames.append(frame)
        catalog = frames[0] if len(frames) == 1 else gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs="EPSG:4326")
        return catalog

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike) -> "Index":
        """Open ``path``; raises :class:`IndexFileError` naming the file when it is not a complete index.

        Vectors and IVF/Flat FAISS files are memory-mapped (HNSW graphs read whole) and lookups opened for
        ``pread``: opening reads no patch record, whatever the size.
        """
        path = Path(path)
        manifest = read_manifest(path)
        check_sizes(path, manifest)
        segments, offset = [], 0
        for record in segment_records(manifest):
            files = record["files"]
            current = files["vectors"]
            try:
                vectors = np.load(path / current, mmap_mode="r")
                augmented = None
                if files.get("augmented"):
                    current = files["augmented"]
                    augmented = np.load(path / current, mmap_mode="r")
                current = files["faiss"]
                index = faiss.read_index(str(path / current), _read_flags(record))
                if files.get("lookup") and record.get("lookup"):
                    current = files["lookup"]
                    lookup = SegmentLookup.load(path, files, record["lookup"])
                else:  # a segment written before lookups existed: built from its catalog, in memory
                    current = files["catalog"]
                    lookup = SegmentLookup.from_catalog(_read_segment_catalog(path, record))
                current = files["vectors"]
                vector_file = NpyRows(path / current)
                search_file = NpyRows(path / files["augmented"]) if augmented is not None else vector_file
            except UNREADABLE as exc:
                raise _corrupt(path / current, exc) from None
            if not (len(lookup) == len(vectors) == index.ntotal == record["count"]) or (augmented is not None and len(augmented) != len(vectors)):
                raise IndexFileError(f"{path}: segment {record['id']} parts disagree ({len(lookup)} patches, {len(vectors)} vectors, "
                                     f"{index.ntotal} in FAISS, {record['count']} recorded); rebuild it")  # fmt: skip
            tune_search(index)
            segments.append(Segment(int(record["id"]), offset, vectors, augmented, index, record, lookup, vector_file, search_file))
            offset += len(vectors)
        if offset != manifest["count"]:
            raise IndexFileError(f"{path}: segments hold {offset} patches, the manifest says {manifest['count']}; rebuild it")
        return cls(path, manifest, segments)

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.manifest["model"])

    @property
    def pca(self) -> PCAWhitening | None:
        name = shared_files(self.manifest).get("pca")
        return PCAWhitening.load(self.path / name) if name else None

    @property
    def tiling(self) -> TilingConfig:
        return TilingConfig.from_dict(self.manifest["tiling"])

    @property
    def grid(self) -> Grid | None:
        """The common grid of an aligned index (``--align``), else None."""
        doc = self.manifest.get("grid")
        return Grid.from_dict(doc) if doc else None

    def scene_record(self, scene_id: str) -> dict:
        """The manifest record of an indexed scene (files, bands, scaling, date)."""
        for record in self.manifest["scenes"]:
            if record["scene_id"] == scene_id:
                return record
        raise IndexFileError(f"{self.path}: no scene {scene_id!r}; indexed: {', '.join(s['scene_id'] for s in self.manifest['scenes'])}")

    def scenes_on(self, dates: Sequence[str]) -> list[dict]:
        """The scene record of each of two or more distinct dates of an aligned index (for change), in date order."""
        if not self.manifest.get("grid"):
            raise QueryError(f"{self.path} was not indexed with --align; change needs every date on one grid")
        wanted = sorted(normalise_date(d) for d in dates)  # earliest first, however they were given
        if len(set(wanted)) != len(wanted):
            raise QueryError(f"dates {', '.join(wanted)}: give two different dates to compare")
        records = []
        for date in wanted:
            found = [s for s in self.manifest["scenes"] if s.get("date") == date]
            if not found:
                have = sorted({s.get("date") or "undated" for s in self.manifest["scenes"]})
                raise QueryError(f"no scene of date {date} in {self.path}; dates indexed: {', '.join(have)}")
            records.append(found[0])
        return records

    def __len__(self) -> int:
        return int(self.manifest["count"])

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

    def _by_segment(self, ids: np.ndarray) -> Iterator[tuple[Segment, np.ndarray, np.ndarray]]:
        """(segment, positions in ``ids``, local ids) for each segment holding some of ``ids``."""
        ids = np.asarray(ids, dtype=np.int64)
        for segment in self.segments:
            mine = np.flatnonzero((ids >= segment.offset) & (ids < segment.offset + segment.count))
            if len(mine):
                yield segment, mine, ids[mine] - segment.offset

    def patches(self, ids: Sequence[int]) -> gpd.GeoDataFrame:
        """patch_id, scene_id, date, row, col and footprint (EPSG:4326) of ``ids``, in that order, read from the lookups."""
        ids = np.asarray(ids, dtype=np.int64)
        scene, row, col = (np.zeros(len(ids), np.int64) for _ in range(3))
        names, geometry = np.empty(len(ids), object), np.empty(len(ids), object)
        for segment, at, local in self._by_segment(ids):
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

    def _exact_scores(self, queries: np.ndarray, ids: np.ndarray, where: np.ndarray) -> np.ndarray:
        """Inner products of each query with the searched vectors of its candidate ``ids`` (only where ``where``)."""
        if not where.any():
            return np.full(ids.shape, -np.inf, np.float32)
        wanted = np.unique(ids[where])
        rows = self.vector_rows(wanted, search=True)
        at = np.searchsorted(wanted, np.where(where, ids, wanted[0]))
        return np.where(where, np.einsum("qd,qcd->qc", queries, rows[at]), -np.inf).astype(np.float32)

    def vector_rows(self, ids: Sequence[int], search: bool = False) -> np.ndarray:
        """``(len(ids), dim)`` float32 stored vectors of ``ids`` (``search``: the augmented ones FAISS ranks), read
        with ``pread``: a query's few rows without mapping gigabytes of vectors into the process."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = np.empty((len(ids), int(self.manifest["dim"])), np.float32)
        for segment, mine, local in self._by_segment(ids):
            out[mine] = (segment.search_file if search else segment.vector_file)[local]
        return out

    def catalog_rows(self, ids: Sequence[int]) -> gpd.GeoDataFrame:
        """Full catalog rows of ``ids`` (pixel window, transform, CRS ...), in that order: read from the row groups
        of the segments' GeoParquet that hold them, unless the whole catalog is already loaded."""
        ids = np.asarray(ids, dtype=np.int64)
        if "catalog" in self.__dict__:
            return self.catalog.iloc[ids].reset_index(drop=True)
        parts, where = [], []
        for segment, mine, local in self._by_segment(ids):
            parts.append(_catalog_rows(self.path / segment.record["files"]["catalog"], local))
            parts[-1]["vector"] = local + segment.offset
            where.append(mine)
        if not parts:
            return self.patches(ids).iloc[:0]
        frame = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry", crs="EPSG:4326")
        return frame.iloc[np.argsort(np.concatenate(where))].reset_index(drop=True)

    @functools.cached_property
    def _scene_dates(self) -> dict:
        return {s["scene_id"]: s.get("date") for s in self.manifest["scenes"]}

    def centres(self, ids: Sequence[int]) -> np.ndarray:
        """(n, 2) lon/lat centres of the patches ``ids``."""
        out = np.zeros((len(ids), 2))
        for segment, mine, local in self._by_segment(np.asarray(ids)):
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
            raise IndexFileError(f"{self.path}: the index is empty; add scenes with `rscbir index`")
        k = min(k, n if allowed is None else int(np.count_nonzero(allowed)))
        scores = np.full((len(queries), max(k, 0)), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), max(k, 0)), -1, dtype=np.int64)
        if k <= 0:
            return scores, ids
        asked = []
        for segment in self.segments:
            local = None if allowed is None else allowed[segment.offset : segment.offset + segment.count]
            if local is None or local.any():
                asked.append((segment, local))

        def one(job: tuple[Segment, np.ndarray | None]) -> tuple[np.ndarray, np.ndarray, bool]:
            segment, local = job
            d, i, exact = _search_segment(segment, queries, k, local)
            return d, np.where(i >= 0, i + segment.offset, -1), exact

        # FAISS and pread release the GIL: segments are searched side by side (11 segments at 10M: p50 9.8 -> 7.0 ms)
        found = list(_segment_pool().map(one, asked)) if len(asked) > 1 else [one(asked[0])]
        d = np.concatenate([f[0] for f in found], axis=1)
        i = np.concatenate([f[1] for f in found], axis=1)
        approximate = np.concatenate([np.full(f[1].shape, not f[2]) for f in found], axis=1)
        d = np.where(i >= 0, d, -np.inf)
        if approximate.any():  # lossy codes (SQ, PQ): the best RERANK * k by code score, re-scored on the stored vectors
            top = np.argsort(-d, axis=1, kind="stable")[:, : RERANK * k]
            d, i, approximate = (np.take_along_axis(a, top, 1) for a in (d, i, approximate))
            d = np.where(approximate & (i >= 0), self._exact_scores(queries, i, approximate & (i >= 0)), d)
        order = np.argsort(-d, axis=1, kind="stable")[:, :k]
        scores[:, : order.shape[1]] = np.take_along_axis(d, order, 1)
        ids[:, : order.shape[1]] = np.take_along_axis(i, order, 1)
        ids[~np.isfinite(scores)] = -1
        return scores, ids


@functools.lru_cache(maxsize=1)
def _segment_pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="rscbir-segment")


EXACT_FILTER_LIMIT = 20_000  # a filter allowing at most this many patches of a segment scores them exactly


RERANK = 4  # lossy codes (SQ, PQ): the best 4 k candidates of all segments are re-scored on the stored vectors


def _lossy(segment: Segment) -> bool:
    kind = segment.record.get("index_type") or ""
    return "SQ" in kind or "PQ" in kind


def _search_segment(segment: Segment, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Local (scores, ids) of one segment, only among ``allowed`` rows when given, and whether the scores are exact:
    a segment of lossy codes returns its best ``RERANK * k`` by code score for :meth:`Index.search` to re-score."""
    lossy = _lossy(segment)
    fetch = RERANK * k if lossy else k
    if allowed is None:
        d, i = segment.faiss_index.search(queries, min(fetch, segment.count))
        return d, i, not lossy
    rows = np.flatnonzero(allowed)
    k = min(k, len(rows))
    if len(rows) > EXACT_FILTER_LIMIT:
        params, keep_alive = _selector_params(segment.faiss_index, allowed)
        d, i = segment.faiss_index.search(queries, min(fetch, len(rows)), params=params)
        del keep_alive
        if (i >= 0).sum(axis=1).min() >= k:
            return d, i, not lossy
    # few allowed rows (a bbox, a date), or a graph search that ran out under the filter: score them exactly
    sims = queries @ np.asarray(segment.search_file[rows], dtype=np.float32).T
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, top, 1), rows[top], True


def _selector_params(index: faiss.Index, allowed: np.ndarray) -> tuple:
    """FAISS search parameters that skip ids outside ``allowed``, keeping the index's own search knobs; and
    the objects they point to, which must outlive the search."""
    bits = np.packbits(allowed, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
    if isinstance(index, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=index.hnsw.efSearch)
    else:
        try:
            params = faiss.SearchParametersIVF(sel=selector, nprobe=faiss.extract_index_ivf(index).nprobe)
        except RuntimeError:
            params = faiss.SearchParameters(sel=selector)
    return params, (bits, selector)


def build_index(
    path: str | os.PathLike,
    scenes: Sequence[Scene],
    model: FeatureModel,
    tiling: TilingConfig = TilingConfig(),
    align: bool = False,
    options: EmbedOptions = EmbedOptions(),
    index_type: str = "auto",
    runner: Runner | None = None,
    augment: int = DEFAULT_AUGMENT,
    centre_scenes: bool = False,
) -> tuple[Index, dict]:
    """Create ``path`` or append ``scenes`` to it; returns the index and a summary.

    Scenes already present (same id and content hash) are skipped. A different
    model, weights, bands or tiling than the index was built with is refused.
    A scene that cannot be read (corrupt, truncated) is reported in
    ``summary["failed"]`` and skipped; the others are indexed. ``runner`` runs
    the model (default in this process; :class:`rscbir.scale.DaskRunner` on a cluster).
    ``augment`` k > 0 stores database-side augmented vectors for search
    (:func:`rscbir.rerank.augment_database`); an append augments only the new
    patches, with neighbours among every patch. ``centre_scenes`` subtracts each
    scene's mean vector (after PCA): what a whole date shares (light, season,
    sensor) is removed, so the same ground matches across dates (OSCD: the same
    place ranks first for 0.58 -> 0.65 of unchanged places; with grid pooling 0.88).
    """
    path = Path(path)
    existing = _open_for_append(path)
    if existing is not None:
        _check_compatible(path, existing, model.config, tiling, options, augment, centre_scenes)
    created = not path.exists()
    path.mkdir(exist_ok=True)  # the parent must exist, as for every other output
    staging = path / STAGING
    _remove_stale_temporaries(staging)
    if existing is not None:
        _remove_orphans(path, existing.manifest)
    summary = {"added": [], "skipped": [], "reused": [], "failed": []}
    new_stores: list = []
    try:
        grid = _index_grid(existing, scenes) if align else None
        new_stores = _stage_scenes(path, existing, scenes, model, tiling, options, grid, runner, summary)
        if not new_stores:
            if existing is None:
                reasons = "; ".join(f["error"] for f in summary["failed"]) or "no scene given"
                raise IndexFileError(f"no scene could be indexed, nothing was written: {reasons}")
            shutil.rmtree(staging, ignore_errors=True)
            return existing, summary
        index = _write_generation(path, existing, new_stores, model.config, tiling, options, index_type, grid, augment, centre_scenes)
    except Exception:
        # An error (not an interruption: Ctrl-C and kill keep .staging so the next run resumes) leaves nothing
        # behind: a folder this run created is removed, else the stages this run wrote.
        if created:
            shutil.rmtree(path, ignore_errors=True)
        else:
            for name in summary["added"]:
                for stage in staging.glob(f"{name}-*"):
                    shutil.rmtree(stage, ignore_errors=True)
            _remove_if_empty(staging)
        raise
    # every stage is now in the index; whatever else .staging holds is left from killed runs of other scenes
    shutil.rmtree(staging, ignore_errors=True)
    if len(index.segments) > MAX_SEGMENTS:
        index, merged = compact_index(path)
        summary["compacted"] = merged
    return index, summary


def _remove_stale_temporaries(staging: Path) -> None:
    """Half-written stage folders (``.name.xxxx``, from a killed run) can never be resumed: remove them."""
    if staging.is_dir():
        for entry in staging.iterdir():
            if entry.name.startswith("."):
                shutil.rmtree(entry, ignore_errors=True)


def _remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _open_for_append(path: Path) -> Index | None:
    """The index already at ``path`` (None for a new or empty folder); refuses other folders."""
    if path.exists() and not path.is_dir():
        raise IndexFileError(f"{path}: exists and is not a folder")
    if (path / MANIFEST).exists():
        return Index.open(path)
    if path.exists() and any(p for p in path.iterdir() if p.name != STAGING):
        raise IndexFileError(f"{path}: folder exists and holds no rscbir index; choose an empty or new folder")
    return None


def _check_compatible(path: Path, existing: Index, config: ModelConfig, tiling: TilingConfig, options: EmbedOptions,
                      augment: int, centre_scenes: bool) -> None:  # fmt: skip
    """Refuse an append whose vectors would not be comparable with the index's (a diff names what differs)."""
    now = {"model": config.fingerprint(), "tiling": tiling.to_dict(), "dim": options.dim, "whiten": options.whiten, "augment": augment,
           "centre_scenes": centre_scenes}  # fmt: skip
    before = {"model": existing.model_config.fingerprint(), "tiling": existing.manifest["tiling"],
              "dim": existing.manifest.get("pca_requested", existing.manifest.get("pca_dim")),
              "whiten": existing.manifest.get("whiten", 0.0), "augment": existing.manifest.get("augment", 0),
              "centre_scenes": existing.manifest.get("centre_scenes", False)}  # fmt: skip
    if before != now:
        differ = [key for key in now if now[key] != before[key]]
        detail = "; ".join(_describe_difference(key, before[key], now[key]) for key in differ)
        raise ModelMismatchError(
            f"{path} was built with another {' and '.join(differ)} ({detail}); use the same --model/--weights/"
            "--preset/--patch-size/--dim/--augment/--centre-scenes options, or index into a new folder"
        )


def _index_grid(existing: Index | None, scenes: Sequence[Scene]) -> Grid:
    """An aligned index keeps one grid for ever, so (row, col) means the same ground in every date."""
    grid = existing.grid if existing is not None else None
    if grid is None:
        return aligned_grid(scenes)
    for scene in scenes:
        common_grid([grid, scene.grid], ["the index grid", scene.location])
    return grid


def _stage_scenes(path, existing, scenes, model, tiling, options, grid, runner, summary) -> list[tuple[dict, EmbeddingStore, Path]]:
    """Embed each new scene into ``.staging/`` (reusing what a killed run staged); fills ``summary``."""
    staging = path / STAGING
    staging.mkdir(exist_ok=True)
    known = {s["scene_id"]: s for s in (existing.manifest["scenes"] if existing else [])}
    key = _fingerprint_key(model.config, tiling, options)
    new_stores = []
    for scene in scenes:
        try:
            digest = scene_content_hash(scene)
        except OSError as exc:
            summary["failed"].append({"scene": scene.location, "error": str(exc)})
            continue
        if scene.scene_id in known:
            if known[scene.scene_id]["content_hash"] == digest:
                log.info("%s: already indexed, skipped", scene.scene_id)
                summary["skipped"].append(scene.scene_id)
                continue
            raise IndexFileError(
                f"{scene.location}: scene id {scene.scene_id!r} is already in {path} with other content; "
                "rename the file or index into a new folder"
            )
        stage = staging / f"{scene.scene_id}-{digest[:16]}-{key}-{_grid_key(grid)}"
        if (stage / "model.json").is_file():
            store = EmbeddingStore.open(stage)
            log.info("%s: reusing embeddings staged by an earlier run", scene.scene_id)
            summary["reused"].append(scene.scene_id)
        else:
            try:
                # staged raw: the index fits one PCA over every new scene (or applies its recorded one)
                raw = dataclasses.replace(options, dim=None)
                from rscbir.embed import embed_scenes  # torch loads here, only when there is something to embed

                store = embed_scenes([scene], stage, model, tiling, options=raw, grid=grid, runner=runner)
            except InvalidSceneError as exc:
                log.warning("%s: skipped: %s", scene.scene_id, exc)
                summary["failed"].append({"scene": scene.location, "error": str(exc)})
                continue
        record = {**store.meta["scenes"][0], "content_hash": digest, "patches": len(store.vectors)}
        new_stores.append((record, store, stage))
        summary["added"].append(scene.scene_id)
    return new_stores


def _describe_difference(key: str, before, now) -> str:
    if key == "model":
        diffs = [f"{k}: {before.get(k)} -> {now.get(k)}" for k in now if before.get(k) != now.get(k)]
        return ", ".join(diffs)
    return f"{before} -> {now}"


def _index_pca(existing: Index | None, new_stores, options: EmbedOptions) -> PCAWhitening | None:
    """The PCA the new vectors go through: the index's own, or one fitted now on the first scenes.

    A PCA needs more vectors than dimensions; with fewer the index keeps full vectors (and says so).
    """
    if existing is not None:
        return existing.pca
    if not options.dim:
        return None
    total = sum(len(s.vectors) for _, s, _ in new_stores)
    if total <= options.dim:
        log.warning("only %d patches: too few to fit a %d-d PCA; the index keeps %d-d vectors",
                    total, options.dim, new_stores[0][1].vectors.shape[1])  # fmt: skip
        return None
    rng = np.random.default_rng(0)
    share = min(1.0, 200_000 / total)
    sample = np.concatenate([np.asarray(s.vectors[np.sort(rng.permutation(len(s.vectors))[: max(1, int(len(s.vectors) * share))])],
                                        dtype=np.float32) for _, s, _ in new_stores])  # fmt: skip
    return PCAWhitening.fit(sample, options.dim, options.whiten)


def _segment_names(segment_id: int, augmented: bool) -> dict:
    stem = f"segment-{segment_id:06d}"
    names = {"catalog": f"{stem}-catalog.parquet", "vectors": f"{stem}-vectors.npy", "faiss": f"{stem}-faiss.index",
             "lookup": f"{stem}-lookup.npy", "cells": f"{stem}-cells.npy"}
    if augmented:
        names["augmented"] = f"{stem}-augmented.npy"
    return names


def _next_segment_id(manifest: dict | None) -> int:
    return 1 + max((int(s["id"]) for s in segment_records(manifest)), default=0) if manifest else 1


def _write_catalog(frame: pd.DataFrame, folder: Path, names: dict) -> dict:
    """A segment's patch rows as GeoParquet (row groups of 64k, so a reader can fetch rows by id) and its lookup
    arrays; returns the lookup's manifest record."""
    frame = gpd.GeoDataFrame(frame.drop(columns=["vector"], errors="ignore"), geometry="geometry", crs="EPSG:4326")
    frame.to_parquet(folder / names["catalog"], index=False, row_group_size=65536)
    return SegmentLookup.from_catalog(frame).save(folder, names)


def _merge_catalogs(path: Path, parts: list[tuple[Segment, np.ndarray]], names: dict) -> dict:
    """The catalog and lookup of the kept ``rows`` of each segment, in order (compaction, removal), streamed: one
    segment's Arrow table in memory at a time, the lookup merged from the segments' lookups. Returns its record."""
    lookup = SegmentLookup.merge([(segment.lookup, rows) for segment, rows in parts])
    writer = None
    try:
        for segment, rows in parts:
            source = path / segment.record["files"]["catalog"]
            try:
                table = pq.read_table(source).take(pa.array(rows))
            except UNREADABLE as exc:
                raise _corrupt(source, exc) from None
            if writer is None:  # GeoParquet metadata of the first part, with the merged bbox
                meta = dict(table.schema.metadata or {})
                if b"geo" in meta:
                    geo = json.loads(meta[b"geo"])
                    for column in geo.get("columns", {}).values():
                        if "bbox" in column:
                            column["bbox"] = list(lookup.bounds)
                    meta[b"geo"] = json.dumps(geo).encode()
                writer = pq.ParquetWriter(path / names["catalog"], table.schema.with_metadata(meta))
            writer.write_table(table.replace_schema_metadata(writer.schema.metadata), row_group_size=65536)
    finally:
        if writer is not None:
            writer.close()
    return lookup.save(path, names)


def _write_new_vectors_and_catalog(path: Path, names: dict, new_stores, dtype, pca: PCAWhitening | None,
                                   centre_scenes: bool = False) -> tuple[np.ndarray, dict]:  # fmt: skip
    """The new segment's vectors (memory-mapped, after PCA), catalog and lookup, from the staged scenes; returns the
    vectors and the lookup's manifest record."""
    count = sum(len(s.vectors) for _, s, _ in new_stores)
    dim = pca.dim if pca is not None else new_stores[0][1].vectors.shape[1]
    vectors = np.lib.format.open_memmap(path / names["vectors"], mode="w+", dtype=dtype, shape=(count, dim))
    offset, frames = 0, []
    for _, store, _ in new_stores:
        def project(chunk: np.ndarray) -> np.ndarray:
            return pca.transform(chunk) if pca is not None else chunk

        shift = 0.0
        if centre_scenes and len(store.vectors):  # each scene's mean direction, what the whole date shares
            shift = sum(project(np.asarray(store.vectors[i : i + 65536], np.float32)).sum(axis=0)
                        for i in range(0, len(store.vectors), 65536)) / len(store.vectors)  # fmt: skip
        for start in range(0, len(store.vectors), 65536):
            chunk = project(np.asarray(store.vectors[start : start + 65536], dtype=np.float32))
            if centre_scenes:
                chunk = normalise(chunk - shift)
            vectors[offset + start : offset + start + len(chunk)] = chunk
        frames.append(store.catalog)
        offset += len(store.vectors)
    vectors.flush()
    return vectors, _write_catalog(pd.concat(frames, ignore_index=True), path, names)


def _write_new_augmented(target: Path, everything: np.ndarray, first_new: int, k: int, existing: Index | None = None) -> np.ndarray:
    """Augmented vectors of the rows from ``first_new`` on, with neighbours among ``everything`` (old and new rows).

    Small indexes search exactly. Past ``EXACT_LIMIT`` an append asks the existing segments' FAISS
    indexes for candidates and re-scores them on the plain vectors, with an exact (or FAISS) search
    among the new rows: it reads what it needs and builds nothing over the old rows.
    """
    total = len(everything)
    neighbours = None
    if total > EXACT_LIMIT:
        new_rows = everything[first_new:] if isinstance(everything, StackedRows) else np.asarray(everything[first_new:])
        if existing is None or first_new == 0:
            helper = build_faiss(everything, auto_index_type(total))
            if isinstance(helper, faiss.IndexHNSW):  # neighbours to average need not be exact: the query-time
                helper.hnsw.efSearch = 128  # efSearch (512 at 1M) would more than double the build
            neighbours = helper.search
        else:
            neighbours = _append_neighbours(existing, np.asarray(new_rows, np.float32), first_new)
    augmented = np.lib.format.open_memmap(target, mode="w+", dtype=everything.dtype, shape=(total - first_new, everything.shape[1]))
    new_rows = np.arange(first_new, total)
    for start in range(0, len(new_rows), 65536):
        rows = new_rows[start : start + 65536]
        augmented[start : start + len(rows)] = augment_database(everything, k, rows, neighbours)
    augmented.flush()
    return augmented


def _append_neighbours(existing: Index, new_vectors: np.ndarray, first_new: int):
    """``neighbours(queries, k) -> (scores, ids)`` over old rows (the index's own search, re-scored on plain vectors)
    and new rows (a FAISS index over the new rows only: exact up to ``EXACT_LIMIT``)."""
    new_search = build_faiss(new_vectors, auto_index_type(len(new_vectors))).search

    def neighbours(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        _, candidates = existing.search(queries, 4 * k)  # ranked on the searched (augmented) vectors
        valid = candidates >= 0
        plain = np.asarray(existing.vectors[np.where(valid, candidates, 0).ravel()], np.float32).reshape(*candidates.shape, -1)
        old_scores = np.where(valid, np.einsum("qd,qcd->qc", queries, plain), -np.inf)
        new_scores, new_ids = new_search(queries, min(k, len(new_vectors)))
        scores = np.concatenate([old_scores, new_scores], axis=1)
        ids = np.concatenate([candidates, np.where(new_ids >= 0, new_ids + first_new, -1)], axis=1)
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1)

    return neighbours


def _segment_faiss(path: Path, vectors: np.ndarray, factory: str, manifest: dict, shared: dict, generation: int,
                   written: list[Path], retrain: bool = False, training: np.ndarray | None = None) -> faiss.Index:  # fmt: skip
    """The FAISS index of a segment; a shared file written for it is added to ``written``.

    Types that need training (IVF, PQ, SQ) train once, on a sample of ``training`` (every vector
    of the index, old and new; default ``vectors``), and every later segment starts from that
    trained empty index (``trained-N.faiss``): one coarse quantizer for all segments, so a search
    over the segments ranks as one index would. ``retrain`` (compaction) trains again.
    """
    if train_faiss_probe(vectors.shape[1], factory).is_trained:
        return build_faiss(vectors, factory)
    if retrain or manifest.get("trained_type") != factory or not shared.get("trained"):
        trained = train_faiss(training if training is not None else vectors, factory)
        shared["trained"] = f"trained-{generation:06d}.faiss"
        manifest["trained_type"] = factory
        _write_faiss(trained, path / shared["trained"])
        written.append(path / shared["trained"])
    index = faiss.read_index(str(path / shared["trained"]))
    for start in range(0, len(vectors), 65536):
        index.add(np.ascontiguousarray(vectors[start : start + 65536], dtype=np.float32))
    tune_search(index)
    return index


@contextlib.contextmanager
def _new_files() -> Iterator[list[Path]]:
    """The files a change of the index writes, collected as it goes: all removed again if anything fails before
    the manifest swap, so a failed append, removal or compaction leaves only the previous generation."""
    written: list[Path] = []
    try:
        yield written
    except BaseException:
        for file in written:
            file.unlink(missing_ok=True)
        raise


def _write_generation(path, existing, new_stores, config, tiling, options, index_type, grid, augment: int,
                      centre_scenes: bool = False) -> Index:  # fmt: skip
    """Add one segment (catalog, vectors, FAISS) for the new scenes, fsync, then swap the manifest.

    The existing segments' files are neither rewritten nor copied: an append writes what it adds.
    """
    generation = (existing.manifest["generation"] + 1) if existing else 1
    old_manifest = existing.manifest if existing else None
    old_count = len(existing) if existing else 0
    pca = _index_pca(existing, new_stores, options)
    segment_id = _next_segment_id(old_manifest)
    names = _segment_names(segment_id, bool(augment))
    shared = shared_files(old_manifest) if old_manifest else {}
    manifest = {"trained_type": old_manifest.get("trained_type")} if old_manifest else {}
    with _new_files() as written:
        written += [path / name for name in names.values()]
        vectors, lookup = _write_new_vectors_and_catalog(path, names, new_stores, options.numpy_dtype, pca, centre_scenes)
        total = old_count + len(vectors)
        requested = existing.manifest["index_type_requested"] if (existing is not None and index_type == "auto") else index_type
        factory = auto_index_type(total) if requested == "auto" else requested
        if requested == "auto" and "IVF" in factory and "IVF" in (manifest.get("trained_type") or ""):
            factory = manifest["trained_type"]  # keep the one trained quantizer until a compaction retrains it
        searched = vectors
        if augment:
            everything = _joined([*(s.vectors for s in existing.segments), vectors] if existing else [vectors])
            searched = _write_new_augmented(path / names["augmented"], everything, old_count, augment, existing)
        if pca is not None and "pca" not in shared:
            shared["pca"] = f"pca-{generation:06d}.npz"
            written.append(path / shared["pca"])
            pca.save(path / shared["pca"])
        sample = _joined([*(s.search_vectors for s in existing.segments), searched]) if existing else searched
        index = _segment_faiss(path, searched, factory, manifest, shared, generation, written, training=sample)
        _write_faiss(index, path / names["faiss"])
        segment = {"id": segment_id, "count": len(vectors), "scenes": [r["scene_id"] for r, _, _ in new_stores],
                   "index_type": factory, "files": names, "lookup": lookup}  # fmt: skip
        manifest.update({
            "format": FORMAT,
            "version": VERSION,
            "generation": generation,
            "count": total,
            "dim": int(vectors.shape[1]),
            "dtype": options.dtype.value,
            "index_type": factory,
            "index_type_requested": requested,
            "model": config.to_dict(),
            "pca_dim": pca.dim if pca is not None else None,
            "pca_requested": existing.manifest.get("pca_requested", existing.manifest.get("pca_dim")) if existing is not None else options.dim,
            "whiten": options.whiten,
            "augment": int(augment),
            "centre_scenes": bool(centre_scenes),
            "tiling": tiling.to_dict(),
            "grid": grid.to_dict() if grid is not None else (existing.manifest.get("grid") if existing else None),
            "scenes": (existing.manifest["scenes"] if existing else []) + [r for r, _, _ in new_stores],
            "segments": (list(segment_records(old_manifest)) if old_manifest else []) + [segment],
            "files": shared,
        })  # fmt: skip
        _commit_generation(path, manifest, written, old_manifest)
    _drop_files(path, old_manifest, manifest)
    return Index.open(path)


def _commit_generation(path: Path, manifest: dict, written: Sequence[Path], previous_manifest: dict | None) -> None:
    """Flush the generation's new files, record every data file's size and checksum, then swap the manifest (the commit).

    Files kept from the previous generation keep their recorded checksums (they are immutable): only new files are hashed.
    """
    for file in written:
        fsync_path(file)
    previous = (previous_manifest or {}).get("checksums", {})
    fresh = {p.name for p in written}
    names = data_files(manifest)
    known = {name: previous[name] for name in names if name in previous and name not in fresh}
    manifest["checksums"] = {**known, **file_records(path, [n for n in names if n not in known])}
    with atomic_path(path / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))
    settle_folder(path)


def _drop_files(path: Path, old_manifest: dict | None, new_manifest: dict) -> None:
    """Remove the files the previous manifest named and the new one does not: garbage once the new manifest is in place."""
    if old_manifest is None:
        return
    for name in set(data_files(old_manifest)) - set(data_files(new_manifest)):
        (path / name).unlink(missing_ok=True)


DATA_FILE = re.compile(r"^(segment-\d+-(catalog\.parquet|vectors\.npy|augmented\.npy|faiss\.index|lookup\.npy|cells\.npy)|trained-\d+\.faiss|pca-\d+\.npz"
                       r"|(catalog|vectors|augmented|faiss)-\d+\.(parquet|npy|index))$")  # fmt: skip


def _remove_orphans(path: Path, manifest: dict) -> list[str]:
    """Data files the manifest does not name (a run killed after writing, before its manifest swap): never read, removed."""
    named = set(data_files(manifest))
    orphans = [p for p in path.iterdir() if p.is_file() and DATA_FILE.match(p.name) and p.name not in named]
    for orphan in orphans:
        orphan.unlink(missing_ok=True)
    return [p.name for p in orphans]


def _copy_rows(target: Path, parts: Sequence[tuple[np.ndarray, np.ndarray]], dim: int, dtype) -> np.ndarray:
    """A memory-mapped file of the ``rows`` of each ``(array, rows)`` part, in order, copied in blocks."""
    total = sum(len(rows) for _, rows in parts)
    out = np.lib.format.open_memmap(target, mode="w+", dtype=dtype, shape=(total, dim))
    offset = 0
    for source, rows in parts:
        for start in range(0, len(rows), 65536):
            block = rows[start : start + 65536]
            out[offset : offset + len(block)] = source[block]
            offset += len(block)
    out.flush()
    return out


def _rewrite_segments(path: Path, existing: Index, groups: list[tuple[list[Segment], list[np.ndarray]]], next_manifest: dict,
                      written: list[Path], retrain: bool = False) -> list[dict]:  # fmt: skip
    """Write one new segment per group of (segments, kept local rows of each), adding its files to ``written``;
    returns their records."""
    records = []
    next_id = _next_segment_id(existing.manifest)
    shared = next_manifest["files"]
    requested = existing.manifest.get("index_type_requested", existing.manifest.get("index_type", "auto"))
    for segments, kept in groups:
        augmented = all(s.augmented is not None for s in segments)
        names = _segment_names(next_id, augmented)
        written += [path / name for name in names.values()]
        dim, dtype = segments[0].vectors.shape[1], segments[0].vectors.dtype
        vectors = _copy_rows(path / names["vectors"], [(s.vectors, rows) for s, rows in zip(segments, kept)], dim, dtype)
        searched = vectors
        if augmented:
            searched = _copy_rows(path / names["augmented"], [(s.augmented, rows) for s, rows in zip(segments, kept)], dim, dtype)
        lookup = _merge_catalogs(path, list(zip(segments, kept)), names)
        factory = auto_index_type(len(vectors)) if requested == "auto" else requested
        if not retrain and len(segments) == 1 and segments[0].record.get("index_type"):
            factory = segments[0].record["index_type"]
        index = _segment_faiss(path, searched, factory, next_manifest, shared, next_manifest["generation"], written, retrain)
        _write_faiss(index, path / names["faiss"])
        records.append({"id": next_id, "count": len(vectors), "scenes": list(lookup["scene_ids"]), "index_type": factory,
                        "files": names, "lookup": lookup})  # fmt: skip
        next_id += 1
    return records


def remove_from_index(path: str | os.PathLike, scene_ids: Sequence[str] = (), dates: Sequence[str] = ()) -> tuple[Index, list[str]]:
    """Remove every patch of the scenes ``scene_ids`` and of the ``dates`` from the index; returns the index and the
    scene ids removed.

    Segments without a removed scene stay as they are; a segment holding only removed scenes is dropped;
    one holding both is rewritten with the rows it keeps (their vectors and augmented vectors as stored).
    Committed by the manifest swap, like an append: a failure or a kill leaves the index as it was.
    Removing every scene is refused (delete the folder instead).
    """
    path = Path(path)
    existing = Index.open(path)
    _remove_orphans(path, existing.manifest)
    known = {s["scene_id"]: s for s in existing.manifest["scenes"]}
    wanted_dates = {normalise_date(d) for d in dates}
    unknown = [s for s in scene_ids if s not in known]
    if unknown:
        raise QueryError(f"{path}: no scene {', '.join(map(repr, unknown))} in the index (scenes: {', '.join(known)})")
    missing_dates = wanted_dates - {s.get("date") for s in known.values()}
    if missing_dates:
        raise QueryError(f"{path}: no scene dated {', '.join(sorted(missing_dates))} in the index")
    removed = [sid for sid, s in known.items() if sid in scene_ids or s.get("date") in wanted_dates]
    if len(removed) == len(known):
        raise IndexFileError(f"{path}: that would remove every scene; delete the folder to remove the whole index")
    keep = ~existing.scene_mask(removed)
    manifest = {**existing.manifest, "generation": existing.manifest["generation"] + 1, "files": shared_files(existing.manifest)}
    kept_segments, groups = [], []
    for segment in existing.segments:
        local = keep[segment.offset : segment.offset + segment.count]
        if local.all():
            kept_segments.append(("kept", segment.record))
        elif local.any():
            kept_segments.append(("new", len(groups)))
            groups.append(([segment], [np.flatnonzero(local)]))
    with _new_files() as written:
        records = _rewrite_segments(path, existing, groups, manifest, written)
        manifest.update({
            "count": int(keep.sum()),
            "scenes": [s for s in existing.manifest["scenes"] if s["scene_id"] not in removed],
            "segments": [value if kind == "kept" else records[value] for kind, value in kept_segments],
        })  # fmt: skip
        _commit_generation(path, manifest, written, existing.manifest)
    _drop_files(path, existing.manifest, manifest)
    return Index.open(path), removed


MAX_SEGMENTS = 16  # an append past this many segments compacts the index (one search per segment adds up)


def compact_index(path: str | os.PathLike) -> tuple[Index, int]:
    """Merge every segment of the index into one (same ids, same answers); returns the index and the number of
    segments merged (0: nothing to do). Types that need training are trained again on all the vectors.

    Written and committed like an append (new files, then the manifest swap), so a kill leaves the index
    as it was and the next run cleans the unfinished files.
    """
    path = Path(path)
    existing = Index.open(path)
    _remove_orphans(path, existing.manifest)
    if len(existing.segments) <= 1:
        return existing, 0
    manifest = {**existing.manifest, "generation": existing.manifest["generation"] + 1, "files": shared_files(existing.manifest)}
    requested = existing.manifest.get("index_type_requested", "auto")
    with _new_files() as written:
        groups = [(existing.segments, [np.arange(s.count) for s in existing.segments])]
        records = _rewrite_segments(path, existing, groups, manifest, written, retrain=True)
        manifest.update({"segments": records, "index_type": records[0]["index_type"], "index_type_requested": requested})
        _commit_generation(path, manifest, written, existing.manifest)
    _drop_files(path, existing.manifest, manifest)
    return Index.open(path), len(existing.segments)


def _write_faiss(index: faiss.Index, target: Path) -> None:
    """``faiss.write_index`` with its failures (a full disk, a read-only folder) as the OSError they are."""
    try:
        faiss.write_index(index, str(target))
    except RuntimeError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise OSError(errno.EIO, f"FAISS could not write the index ({lines[-1].strip() if lines else 'write failed'})", str(target)) from None


__all__ = ["Index", "Segment", "StackedRows", "build_index", "remove_from_index", "compact_index", "build_faiss", "train_faiss",
           "auto_index_type", "scene_content_hash"]

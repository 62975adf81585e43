"""One immutable segment of an index opened for reading: its vectors, FAISS index, lookup and catalog rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import faiss
import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rscbir.catalog import read_catalog
from rscbir.errors import IndexFileError
from rscbir.index.faiss_types import read_faiss
from rscbir.index.lookup import SegmentLookup
from rscbir.index.manifest import SegmentRecord
from rscbir.index.rows import NpyRows

UNREADABLE = (OSError, ValueError, KeyError, RuntimeError, pa.ArrowException)  # what numpy, FAISS and Arrow raise for a bad file


def corrupt(target: Path, exc: BaseException) -> IndexFileError:
    """The error for an index file that cannot be read: the file, the first line of the cause, what to do."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return IndexFileError(f"{target}: unreadable or corrupt ({first}); rebuild the index with `rscbir index build`")


@dataclass
class Segment:
    """One immutable part of an index: its catalog rows, vectors and FAISS index; ``offset`` is the global id
    of its first row (ids run through the segments in manifest order)."""

    id: int
    offset: int
    vectors: np.ndarray
    augmented: np.ndarray | None
    faiss_index: faiss.Index | None  # None when opened with search=False
    record: SegmentRecord
    lookup: SegmentLookup
    vector_file: NpyRows  # the same rows read with pread: a query's few rows without mapping the file
    search_file: NpyRows

    @property
    def count(self) -> int:
        return len(self.vectors)

    @property
    def search_vectors(self) -> np.ndarray:
        return self.augmented if self.augmented is not None else self.vectors

    @classmethod
    def open(cls, path: Path, record: SegmentRecord, offset: int, search: bool = True) -> "Segment":
        """Open segment ``record`` of the index at ``path``: vectors and IVF/Flat FAISS files memory-mapped, lookups
        opened for ``pread``; :class:`IndexFileError` naming the file when a part is unreadable or they disagree.
        ``search=False`` leaves the FAISS file unread (an HNSW graph is read whole): for work that only reads rows."""
        files = record.files
        current = files["vectors"]
        try:
            vectors = np.load(path / current, mmap_mode="r")
            augmented = None
            if files.get("augmented"):
                current = files["augmented"]
                augmented = np.load(path / current, mmap_mode="r")
            current = files["faiss"]
            index = read_faiss(path / current, record.index_type) if search else None
            if files.get("lookup") and record.lookup:
                current = files["lookup"]
                lookup = SegmentLookup.load(path, files, record.lookup)
            else:  # a segment written before lookups existed: built from its catalog, in memory
                current = files["catalog"]
                lookup = SegmentLookup.from_catalog(read_segment_catalog(path, record))
            current = files["vectors"]
            vector_file = NpyRows(path / current)
            search_file = NpyRows(path / files["augmented"]) if augmented is not None else vector_file
        except UNREADABLE as exc:
            raise corrupt(path / current, exc) from None
        if not (len(lookup) == len(vectors) == (index.ntotal if index is not None else record.count) == record.count) or (augmented is not None and len(augmented) != len(vectors)):
            raise IndexFileError(f"{path}: segment {record.id} parts disagree ({len(lookup)} patches, {len(vectors)} vectors, "
                                 f"{index.ntotal} in FAISS, {record.count} recorded); rebuild it")  # fmt: skip
        return cls(record.id, offset, vectors, augmented, index, record, lookup, vector_file, search_file)


def by_segment(segments: Sequence[Segment], ids: np.ndarray) -> Iterator[tuple[Segment, np.ndarray, np.ndarray]]:
    """(segment, positions in ``ids``, local ids) for each of ``segments`` holding some of the global ``ids``."""
    ids = np.asarray(ids, dtype=np.int64)
    for segment in segments:
        mine = np.flatnonzero((ids >= segment.offset) & (ids < segment.offset + segment.count))
        if len(mine):
            yield segment, mine, ids[mine] - segment.offset


def vector_rows(segments: Sequence[Segment], ids: np.ndarray, dim: int, search: bool = False) -> np.ndarray:
    """``(len(ids), dim)`` float32 stored vectors of the global ``ids`` (``search``: the augmented ones FAISS ranks),
    read with ``pread``: a query's few rows without mapping gigabytes of vectors into the process."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    out = np.empty((len(ids), dim), np.float32)
    for segment, mine, local in by_segment(segments, ids):
        out[mine] = (segment.search_file if search else segment.vector_file)[local]
    return out


def read_segment_catalog(path: Path, record: SegmentRecord) -> gpd.GeoDataFrame:
    """The whole GeoParquet catalog of a segment."""
    target = path / record.files["catalog"]
    try:
        return read_catalog(target)
    except UNREADABLE as exc:
        raise corrupt(target, exc) from None


def catalog_rows(target: Path, local: np.ndarray) -> gpd.GeoDataFrame:
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
        raise corrupt(target, exc) from None
    return frame.iloc[np.argsort(np.concatenate(firsts))].reset_index(drop=True)


__all__ = ["Segment", "UNREADABLE", "by_segment", "corrupt", "read_segment_catalog", "catalog_rows", "vector_rows"]

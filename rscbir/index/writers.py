"""Writing a segment's files: catalog and lookup, vectors (after PCA, optionally centred per scene), augmented
vectors, and its FAISS index, streamed ``CHUNK`` rows at a time."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import faiss
import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rscbir.index.faiss_types import EXACT_LIMIT, add_in_chunks, auto_index_type, build_faiss, train_faiss, train_faiss_probe, write_faiss
from rscbir.index.layout import CHUNK
from rscbir.index.lookup import SegmentLookup
from rscbir.index.rows import StackedRows
from rscbir.index.segment import UNREADABLE, Segment, corrupt
from rscbir.index.commit import Generation
from rscbir.index.manifest import Trained
from rscbir.index.reader import Index
from rscbir.models.whitening import PCAWhitening, PlaceWhitening
from rscbir.rerank import augment_database, normalise
from rscbir.store import EmbeddingStore

def write_catalog(frame: pd.DataFrame, folder: Path, names: dict) -> dict:
    """A segment's patch rows as GeoParquet (row groups of ``CHUNK``, so a reader can fetch rows by id) and its lookup
    arrays; returns the lookup's manifest record."""
    frame = gpd.GeoDataFrame(frame.drop(columns=["vector"], errors="ignore"), geometry="geometry", crs="EPSG:4326")
    frame.to_parquet(folder / names["catalog"], index=False, row_group_size=CHUNK)
    return SegmentLookup.from_catalog(frame).save(folder, names)


def merge_catalogs(path: Path, parts: list[tuple[Segment, np.ndarray]], names: dict) -> dict:
    """The catalog and lookup of the kept ``rows`` of each segment, in order (compaction, removal), streamed: one
    segment's Arrow table in memory at a time, the lookup merged from the segments' lookups. Returns its record."""
    lookup = SegmentLookup.merge([(segment.lookup, rows) for segment, rows in parts])
    writer = None
    try:
        for segment, rows in parts:
            source = path / segment.record.files["catalog"]
            try:
                table = pq.read_table(source).take(pa.array(rows))
            except UNREADABLE as exc:
                raise corrupt(source, exc) from None
            if writer is None:  # GeoParquet metadata of the first part, with the merged bbox
                meta = dict(table.schema.metadata or {})
                if b"geo" in meta:
                    geo = json.loads(meta[b"geo"])
                    for column in geo.get("columns", {}).values():
                        if "bbox" in column:
                            column["bbox"] = list(lookup.bounds)
                    meta[b"geo"] = json.dumps(geo).encode()
                writer = pq.ParquetWriter(path / names["catalog"], table.schema.with_metadata(meta))
            writer.write_table(table.replace_schema_metadata(writer.schema.metadata), row_group_size=CHUNK)
    finally:
        if writer is not None:
            writer.close()
    return lookup.save(path, names)


@dataclass(frozen=True)
class StagedScene:
    """A scene embedded into ``.staging/`` and waiting for its segment: its manifest record, store and folder."""

    record: dict
    store: EmbeddingStore
    folder: Path


def acquisition_key(record: dict) -> str:
    """What one acquisition is: the scene's date (every tile flown that day), else the scene itself."""
    return record.get("date") or record["scene_id"]


def projected(stored: np.ndarray, pca: PCAWhitening | None, rows: slice | np.ndarray) -> np.ndarray:
    chunk = np.asarray(stored[rows], dtype=np.float32)
    return pca.transform(chunk) if pca is not None else chunk


def acquisition_means(staged: Sequence[StagedScene], pca: PCAWhitening | None) -> dict[str, np.ndarray]:
    """Each acquisition's mean vector (after PCA) over the staged scenes: what a whole date shares (light, season)."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for scene in staged:
        key, stored = acquisition_key(scene.record), scene.store.vectors
        sums[key] = sums.get(key, 0.0) + projected_sum(stored, pca, 0, len(stored))
        counts[key] = counts.get(key, 0) + len(stored)
    return {key: sums[key] / counts[key] for key in sums if counts[key]}


def projected_sum(stored: np.ndarray, pca: PCAWhitening | None, start: int, stop: int) -> np.ndarray | float:
    """The sum of rows ``start:stop`` of staged vectors after PCA, read ``CHUNK`` rows at a time."""
    total = 0.0
    for first in range(start, stop, CHUNK):
        total = total + projected(stored, pca, slice(first, min(first + CHUNK, stop))).sum(axis=0)
    return total


def fill_index_vectors(target: np.ndarray, runs: Sequence[tuple[np.ndarray, int, int, np.ndarray | None]], pca: PCAWhitening | None,
                       places: PlaceWhitening | None) -> None:  # fmt: skip
    """Fill ``target`` with runs ``(stored, start, stop, shift)`` of staged rows as the index keeps them, ``CHUNK``
    rows at a time: after PCA, the acquisition's mean ``shift`` taken off, then the within-place whitening."""
    offset = 0
    for stored, start, stop, shift in runs:
        for first in range(start, stop, CHUNK):
            chunk = projected(stored, pca, slice(first, min(first + CHUNK, stop)))
            if shift is not None:
                chunk = normalise(chunk - shift)
            if places is not None:
                chunk = places.transform(chunk)
            target[offset : offset + len(chunk)] = chunk
            offset += len(chunk)
    target.flush()


def place_deviations(staged: Sequence[StagedScene], pca: PCAWhitening | None, means: dict[str, np.ndarray],
                     places: int = 20_000) -> tuple[np.ndarray, int]:  # fmt: skip
    """Deviations of each place's centred vectors from that place's mean over its acquisitions, for up to ``places``
    places (a fixed spread of grid cells) seen on 2+ acquisitions (what :class:`PlaceWhitening` divides out), and
    how many places they come from."""
    largest = max(len(s.store.vectors) for s in staged)
    step = max(1, -(-largest // places))
    keys, vectors = [], []
    for scene in staged:
        catalog = scene.store.columns("row", "col")
        rows = np.flatnonzero(((catalog["row"].to_numpy() * 7919 + catalog["col"].to_numpy()) % step) == 0)
        if not len(rows):
            continue
        v = projected(scene.store.vectors, pca, rows)
        shift = means.get(acquisition_key(scene.record))
        vectors.append(normalise(v - shift) if shift is not None else v)
        keys.append(catalog["row"].to_numpy()[rows] * (1 << 32) + catalog["col"].to_numpy()[rows])
    if not vectors:
        return np.zeros((0, 0), np.float32), 0
    keys, vectors = np.concatenate(keys), np.concatenate(vectors)
    _, place, count = np.unique(keys, return_inverse=True, return_counts=True)
    sums = np.zeros((count.size, vectors.shape[1]))
    np.add.at(sums, place, vectors)
    deviations = vectors - sums[place] / count[place, None]
    return deviations[count[place] >= 2], int((count >= 2).sum())


def write_vectors_and_catalog(path: Path, names: dict, staged: Sequence[StagedScene], dtype: np.dtype, pca: PCAWhitening | None,
                              means: dict[str, np.ndarray] | None = None, places: PlaceWhitening | None = None) -> tuple[np.ndarray, dict]:  # fmt: skip
    """The new segment's vectors (memory-mapped, after PCA, each acquisition's mean taken off with ``means``, then the
    within-place whitening ``places``), catalog and lookup, from the staged scenes; returns the vectors and the
    lookup's manifest record."""
    count = sum(len(s.store.vectors) for s in staged)
    dim = pca.dim if pca is not None else staged[0].store.vectors.shape[1]
    vectors = np.lib.format.open_memmap(path / names["vectors"], mode="w+", dtype=dtype, shape=(count, dim))
    runs = [(s.store.vectors, 0, len(s.store.vectors), (means or {}).get(acquisition_key(s.record))) for s in staged]
    fill_index_vectors(vectors, runs, pca, places)
    return vectors, write_catalog(pd.concat([s.store.catalog for s in staged], ignore_index=True), path, names)


def write_augmented(target: Path, everything: np.ndarray, first_new: int, k: int, existing: Index | None = None) -> np.ndarray:
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
    return write_augmented_rows(target, everything, np.arange(first_new, total), k, neighbours)


def write_augmented_rows(target: Path, everything: np.ndarray, rows: np.ndarray, k: int, neighbours=None,
                         found: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:  # fmt: skip
    """The augmented vectors of ``rows`` of ``everything`` written to ``target`` (memory-mapped), ``CHUNK`` rows at a
    time: their neighbours searched exactly, by ``neighbours(queries, k)``, or given (``found``, aligned with ``rows``)."""
    augmented = np.lib.format.open_memmap(target, mode="w+", dtype=everything.dtype, shape=(len(rows), everything.shape[1]))
    for start in range(0, len(rows), CHUNK):
        block = rows[start : start + CHUNK]
        given = None if found is None else (found[0][start : start + CHUNK], found[1][start : start + CHUNK])
        augmented[start : start + len(block)] = augment_database(everything, k, block, neighbours, found=given)
    augmented.flush()
    return augmented


def _append_neighbours(existing: Index, new_vectors: np.ndarray, first_new: int):
    """``neighbours(queries, k) -> (scores, ids)`` over old rows (the index's own search, re-scored on plain vectors)
    and new rows (a FAISS index over the new rows only: exact up to ``EXACT_LIMIT``)."""
    new_search = build_faiss(new_vectors, auto_index_type(len(new_vectors))).search
    old_search = existing_neighbours(existing)

    def neighbours(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return top_of([old_search(queries, k), shifted(new_search(queries, min(k, len(new_vectors))), first_new)], k)

    return neighbours


def existing_neighbours(existing: Index):
    """``search(queries, k) -> (scores, ids)`` among an index's rows: its own search (ranked on the searched,
    perhaps augmented, vectors) for 4 k candidates, re-scored on the plain vectors."""

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        _, candidates = existing.search(queries, 4 * k)
        valid = candidates >= 0
        plain = np.asarray(existing.vectors[np.where(valid, candidates, 0).ravel()], np.float32).reshape(*candidates.shape, -1)
        return np.where(valid, np.einsum("qd,qcd->qc", queries, plain), -np.inf), candidates

    return search


def shifted(found: tuple[np.ndarray, np.ndarray], first: int) -> tuple[np.ndarray, np.ndarray]:
    """FAISS results of a part whose first row is row ``first`` of the whole: ids moved there, missing ones -1, -inf."""
    scores, ids = found
    return np.where(ids >= 0, scores, -np.inf), np.where(ids >= 0, ids + first, -1)


def top_of(results: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of several (scores, ids) results for the same queries (the first result wins ties)."""
    scores = np.concatenate([r[0] for r in results], axis=1)
    ids = np.concatenate([r[1] for r in results], axis=1)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1)


def merged_neighbours(sources: Sequence[tuple], queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest of every query row among several sources ``(open_search, first_row)``: each source is opened
    (``open_search() -> search(queries, k)``), asked for every query ``CHUNK`` rows at a time, and let go before
    the next, so only one source's index is in memory at a time."""
    best = (np.full((len(queries), 0), -np.inf, np.float32), np.full((len(queries), 0), -1, np.int64))
    for open_search, first in sources:
        search = open_search()
        found = [shifted(search(np.ascontiguousarray(queries[s : s + CHUNK], np.float32), k), first) for s in range(0, len(queries), CHUNK)]
        del search
        best = top_of([best, (np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found]))], k)
    return best


def trained_quantizer(change: Generation, factory: str, trained: Trained | None, number: int, training: np.ndarray,
                      retrain: bool = False) -> Trained:  # fmt: skip
    """The trained empty index of type ``factory`` every segment starts from: the index's own, or one trained now on a
    sample of ``training`` and written as ``trained-N.faiss`` (part of ``change``)."""
    if retrain or trained is None or trained.factory != factory:
        trained = Trained(f"trained-{number:06d}.faiss", factory)
        change.add(trained.file)
        write_faiss(train_faiss(training, factory), change.path / trained.file)
    return trained


def needs_training(factory: str, dim: int) -> bool:
    """Whether a FAISS index of type ``factory`` must be trained (IVF, PQ, SQ) before vectors are added."""
    return not train_faiss_probe(dim, factory).is_trained


def segment_faiss(change: Generation, vectors: np.ndarray, factory: str, trained: Trained | None, number: int,
                  retrain: bool = False, training: np.ndarray | None = None) -> tuple[faiss.Index, Trained | None]:  # fmt: skip
    """The FAISS index of a segment, and the trained empty index the manifest records from now on.

    Types that need training (IVF, PQ, SQ) train once, on a sample of ``training`` (every vector
    of the index, old and new; default ``vectors``), and every later segment starts from that
    trained empty index (``trained-N.faiss``, written as part of ``change``): one coarse quantizer for all
    segments, so a search over the segments ranks as one index would. ``retrain`` (compaction) trains again.
    """
    if not needs_training(factory, vectors.shape[1]):
        return segment_index(vectors, factory), trained
    trained = trained_quantizer(change, factory, trained, number, training if training is not None else vectors, retrain)
    return segment_index(vectors, factory, change.path / trained.file), trained


def segment_index(vectors: np.ndarray, factory: str, trained_file: Path | None = None) -> faiss.Index:
    """A segment's FAISS index over ``vectors``: added to the index's trained empty one (``trained_file``, types that
    need training), else built."""
    if trained_file is None:
        return build_faiss(vectors, factory)
    return add_in_chunks(faiss.read_index(str(trained_file)), vectors)


def copy_rows(target: Path, parts: Sequence[tuple[np.ndarray, np.ndarray]], dim: int, dtype) -> np.ndarray:
    """A memory-mapped file of the ``rows`` of each ``(array, rows)`` part, in order, copied in blocks."""
    total = sum(len(rows) for _, rows in parts)
    out = np.lib.format.open_memmap(target, mode="w+", dtype=dtype, shape=(total, dim))
    offset = 0
    for source, rows in parts:
        for start in range(0, len(rows), CHUNK):
            block = rows[start : start + CHUNK]
            out[offset : offset + len(block)] = source[block]
            offset += len(block)
    out.flush()
    return out


__all__ = ["StagedScene", "copy_rows", "existing_neighbours", "fill_index_vectors", "merge_catalogs", "merged_neighbours", "needs_training",
           "projected_sum", "segment_faiss", "segment_index", "top_of", "trained_quantizer", "write_augmented", "write_augmented_rows", "write_catalog",
           "write_vectors_and_catalog"]

"""Segments written by Dask workers: an index build on a cluster where the driver never holds the vectors.

The driver fits what every new segment shares from samples and from sums the workers send back (the PCA,
each date's mean vector, the within-place whitening, a trained FAISS quantizer), writes those small files,
and commits the manifest. Each task turns one contiguous run of the staged rows into one segment: vectors,
catalog, lookup, augmented vectors (their neighbours searched among every segment's vectors) and FAISS index.

A task writes its files under temporary names in ``.staging/`` and renames them into place, so a task run
again after its worker was killed overwrites and nothing is duplicated; nothing is named by a manifest until
the driver's commit, so a failed build leaves the previous index as it was. The rows keep the in-process
order and every transform is the in-process one: the index equals the one-segment in-process index
(vectors to float rounding, neighbours exactly up to ``EXACT_LIMIT`` vectors).
"""

from __future__ import annotations

import functools
import logging
import operator
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np
import pandas as pd

from rscbir.index.commit import Generation
from rscbir.index.faiss_types import EXACT_LIMIT, auto_index_type, build_faiss, write_faiss
from rscbir.index.generation import index_factory, index_pca, next_manifest, place_whitening, shared_files
from rscbir.index.layout import STAGING, segment_names
from rscbir.index.maintain import MAX_SEGMENTS
from rscbir.index.manifest import IndexSettings, SegmentRecord
from rscbir.index.reader import Index
from rscbir.index.rows import joined
from rscbir.index.writers import (StagedScene, acquisition_key, existing_neighbours, fill_index_vectors, merged_neighbours, needs_training,
                                 projected_sum, segment_index, trained_quantizer, write_augmented_rows, write_catalog)  # fmt: skip
from rscbir.models.whitening import Moments, PCAWhitening, PlaceWhitening
from rscbir.store import EmbeddingStore

log = logging.getLogger(__name__)
MIN_PART_ROWS = 20_000  # a segment of fewer new rows is not worth a task of its own
MAX_PART_ROWS = 1_000_000  # a worker writing 300k rows peaked at 0.95 GiB (HNSW32, bench_index_segments.py)
# Each query searches every part's helper graph. At 64 a 150k-vector HNSW32 finds the same 5 neighbours as at 128
# (recall 0.9998 against exact on NAIP vectors) in half the time; the one-process build searches one graph at 128.
HELPER_EF_SEARCH = 64


@dataclass(frozen=True)
class Part:
    """The staged rows one task turns into one segment: ``(stage folder, acquisition, start, stop)`` runs in index
    order, the segment's file names, and the new-row number of its first patch."""

    runs: tuple[tuple[str, str, int, int], ...]
    segment_id: int
    names: dict
    first: int

    @property
    def count(self) -> int:
        return sum(stop - start for _, _, start, stop in self.runs)


def plan_parts(staged: Sequence[StagedScene], parts: int, first_segment_id: int, augmented: bool) -> list[Part]:
    """Split the staged rows (scene after scene, as the in-process build orders them) into ``parts`` contiguous runs
    of nearly equal size; a scene may span two parts."""
    sizes = [len(s.store.vectors) for s in staged]
    total = sum(sizes)
    bounds = [round(i * total / parts) for i in range(parts + 1)]
    starts = np.cumsum([0, *sizes])
    planned = []
    for number, (low, high) in enumerate(zip(bounds[:-1], bounds[1:])):
        runs = tuple((str(scene.folder), acquisition_key(scene.record), int(max(low, a) - a), int(min(high, b) - a))
                     for scene, a, b in zip(staged, starts[:-1], starts[1:]) if max(low, a) < min(high, b))  # fmt: skip
        planned.append(Part(runs, first_segment_id + number, segment_names(first_segment_id + number, augmented), int(low)))
    return [p for p in planned if p.count]


def part_count(client, total: int, existing_segments: int, max_segments: int, min_rows: int = MIN_PART_ROWS,
               max_rows: int = MAX_PART_ROWS) -> int:  # fmt: skip
    """Segments to write: one per worker, more when a worker's share would pass ``max_rows`` (what one worker holds
    while it writes its segment), none smaller than ``min_rows``, and never so many that the index passes
    ``max_segments`` (which would compact every vector back on the driver)."""
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    wanted = max(workers, -(-total // max(1, max_rows)))
    room = max(1, max_segments - existing_segments)
    return int(max(1, min(wanted, room, total // max(1, min_rows))))


def write_generation_on(client, path: Path, existing: Index | None, staged: Sequence[StagedScene], settings: IndexSettings,
                        config, grid, search: bool = True) -> Index:  # fmt: skip
    """:func:`rscbir.index.build.write_generation` with the new segments written by the workers of ``client``: one
    segment per worker (``MIN_PART_ROWS`` to ``MAX_PART_ROWS`` rows each, see :func:`part_count`), the driver sending
    each task its rows and the small shared transforms. A failed task cancels the others and leaves the index as
    it was."""
    from distributed import wait

    old = existing.manifest if existing is not None else None
    generation = old.generation + 1 if old is not None else 1
    old_count = len(existing) if existing is not None else 0
    total = old_count + sum(len(s.store.vectors) for s in staged)
    count = part_count(client, total - old_count, len(old.segments) if old else 0, MAX_SEGMENTS, MIN_PART_ROWS, MAX_PART_ROWS)
    parts = plan_parts(staged, count, old.next_segment_id() if old is not None else 1, bool(settings.augment))
    path = Path(path)

    def run(function, *args, label: str) -> list:
        """``function(path, part, *args)`` for every part on the cluster; their results in part order."""
        started = time.perf_counter()
        futures = [client.submit(function, str(path), part, *args, key=f"{label}-{part.names['vectors']}-{os.getpid()}-{generation}",
                                 retries=3, pure=False) for part in parts]  # fmt: skip
        try:
            wait(futures)
            return [future.result() for future in futures]
        except BaseException:
            client.cancel(futures)  # nothing more is written once the change is rolled back
            raise
        finally:
            log.info("%s: %d task(s) on the cluster, %.1f s", label, len(parts), time.perf_counter() - started)

    pca = index_pca(existing, staged, settings, moments=lambda rows: _summed_moments(client, path, parts, staged, rows))
    with Generation(path, old) as change:
        for part in parts:
            change.add(*part.names.values())
        shared = shared_files(change, old.files if old is not None else {}, generation, pca)
        pca_file = shared.get("pca") if pca is not None else None
        means = None
        if settings.centre_scenes:
            means = _means(run(part_sums, pca_file, label="sums"))
        places = place_whitening(existing, staged, pca, means, grid)
        shared = shared_files(change, shared, generation, places=places)
        places_file = shared.get("places") if places is not None else None
        lookups = run(write_part, settings.dtype, pca_file, means, places_file, label="segment")
        factory, requested = index_factory(old, settings, total)
        trained = old.trained if old is not None else None
        if settings.augment:
            helpers = run(write_helper, label="helper") if total > EXACT_LIMIT else None
            run(augment_part, parts, old_count, settings.augment, helpers, label="augment")
            for helper in helpers or ():
                Path(helper).unlink(missing_ok=True)
        searched = "augmented" if settings.augment else "vectors"
        new_rows = [np.load(path / p.names[searched], mmap_mode="r") for p in parts]
        quantizer = None
        if needs_training(factory, new_rows[0].shape[1]):  # one quantizer for every segment, trained on a sample
            sample = joined([*(s.search_vectors for s in existing.segments), *new_rows] if existing else new_rows)
            trained = trained_quantizer(change, factory, trained, generation, sample)
            quantizer = trained.file
        del new_rows
        run(write_part_faiss, searched, factory, quantizer, label="faiss")
        segments = [SegmentRecord(p.segment_id, p.count, _scenes_of(staged, p), factory, p.names, lookup) for p, lookup in zip(parts, lookups)]
        change.commit(next_manifest(old, settings, config, grid, staged, segments, shared, trained, requested, pca))
    return Index.open(path, search=search)


def _summed_moments(client, path: Path, parts: Sequence[Part], staged: Sequence[StagedScene], rows: list[np.ndarray]) -> Moments:
    """The PCA sample's moments, each part's summed by a worker and added here as they arrive (one (D, D) matrix
    held at a time, not the sample)."""
    from distributed import as_completed

    sampled = {str(s.folder): r for s, r in zip(staged, rows)}
    futures = []
    for part in parts:
        mine = [sampled[folder][(sampled[folder] >= start) & (sampled[folder] < stop)] for folder, _, start, stop in part.runs]
        futures.append(client.submit(part_moments, str(path), part, mine, retries=3, pure=False))
    total = None
    try:
        for future in as_completed(futures):
            moments = future.result()
            total = moments if total is None else total + moments
            future.release()
    except BaseException:
        client.cancel(futures)
        raise
    return total


def _means(sums: list[dict]) -> dict[str, np.ndarray]:
    total: dict[str, list] = {}
    for part in sums:
        for key, (vector, count) in part.items():
            running = total.setdefault(key, [0.0, 0])
            running[0] = running[0] + vector
            running[1] += count
    return {key: vector / count for key, (vector, count) in total.items() if count}


def _scenes_of(staged: Sequence[StagedScene], part: Part) -> tuple[str, ...]:
    by_folder = {str(s.folder): s.record["scene_id"] for s in staged}
    return tuple(dict.fromkeys(by_folder[folder] for folder, *_ in part.runs))


def _load(path: str, name: str | None, kind):
    return kind.load(Path(path) / name) if name else None


def _publish(folder: str | Path, written: Path, names: Sequence[str]) -> None:
    """Move a task's finished files into ``folder`` (renames on one filesystem), then drop its scratch folder."""
    for name in names:
        os.replace(written / name, Path(folder) / name)
    shutil.rmtree(written, ignore_errors=True)


def _scratch(path: str) -> Path:
    """A task's own folder in ``.staging/`` (dot-named: a later build removes one a killed task left)."""
    return Path(tempfile.mkdtemp(prefix=".part-", dir=Path(path) / STAGING))


# ---------------------------------------------------------------------------------------------- tasks (on workers)
def part_moments(path: str, part: Part, rows: Sequence[np.ndarray]) -> Moments:
    """The moments (count, sum, scatter) of the part's rows in the PCA sample: ``rows`` of each of its runs."""
    return functools.reduce(operator.add, (Moments.of(EmbeddingStore.open(folder).vectors, sampled) for (folder, *_), sampled in zip(part.runs, rows)))


def part_sums(path: str, part: Part, pca_file: str | None) -> dict[str, tuple[np.ndarray, int]]:
    """Per acquisition: the sum of the part's vectors after PCA, and how many (the driver divides)."""
    pca = _load(path, pca_file, PCAWhitening)
    sums: dict[str, tuple[np.ndarray, int]] = {}
    for folder, key, start, stop in part.runs:
        stored = EmbeddingStore.open(folder).vectors
        vector, count = sums.get(key, (0.0, 0))
        sums[key] = (vector + projected_sum(stored, pca, start, stop), count + stop - start)
    return sums


def write_part(path: str, part: Part, dtype: str, pca_file: str | None, means: dict | None, places_file: str | None) -> dict:
    """The segment's vectors (after PCA, the date's mean off, the within-place whitening), catalog and lookup;
    returns the lookup's manifest record."""
    pca, places = _load(path, pca_file, PCAWhitening), _load(path, places_file, PlaceWhitening)
    stores = [EmbeddingStore.open(folder) for folder, *_ in part.runs]
    dim = pca.dim if pca is not None else stores[0].vectors.shape[1]
    scratch = _scratch(path)
    vectors = np.lib.format.open_memmap(scratch / part.names["vectors"], mode="w+", dtype=np.dtype(dtype), shape=(part.count, dim))
    fill_index_vectors(vectors, [(store.vectors, start, stop, (means or {}).get(key)) for store, (_, key, start, stop) in zip(stores, part.runs)],
                       pca, places)  # fmt: skip
    del vectors
    frames = [store.catalog.iloc[start:stop] for store, (*_, start, stop) in zip(stores, part.runs)]
    lookup = write_catalog(pd.concat(frames, ignore_index=True), scratch, part.names)
    _publish(path, scratch, [part.names[k] for k in ("vectors", "catalog", "lookup", "cells")])
    return lookup


def write_helper(path: str, part: Part) -> str:
    """A FAISS index over the part's vectors that the augmentation of every part searches (large indexes only);
    returns its file, a temporary in ``.staging/``."""
    vectors = np.load(Path(path) / part.names["vectors"], mmap_mode="r")
    helper = build_faiss(vectors, auto_index_type(len(vectors)))
    name, scratch = f"helper-{part.names['vectors']}.faiss", _scratch(path)
    write_faiss(helper, scratch / name)
    _publish(Path(path) / STAGING, scratch, [name])
    return str(Path(path) / STAGING / name)


def augment_part(path: str, part: Part, parts: Sequence[Part], old_count: int, k: int, helpers: Sequence[str] | None) -> None:
    """The part's augmented vectors: each plus its ``k`` nearest among every vector of the index (old segments and
    every new part). Exact up to ``EXACT_LIMIT`` vectors, as in one process; beyond, each new part's helper index
    is searched in turn (one in memory at a time) and the old segments through their own FAISS indexes."""
    existing = Index.open(path) if old_count else None
    new_rows = [np.load(Path(path) / p.names["vectors"], mmap_mode="r") for p in parts]
    everything = joined([*(s.vectors for s in existing.segments), *new_rows] if existing else new_rows)
    rows = np.arange(old_count + part.first, old_count + part.first + part.count)
    found = None
    if helpers is not None:
        queries = new_rows[parts.index(part)]
        sources = [(lambda: existing_neighbours(existing), 0)] if existing is not None else []
        sources += [(functools.partial(_helper_search, helper), old_count + other.first) for helper, other in zip(helpers, parts)]
        found = merged_neighbours(sources, queries, k + 1)
    scratch = _scratch(path)
    write_augmented_rows(scratch / part.names["augmented"], everything, rows, k, found=found)  # its map is let go: closed
    _publish(path, scratch, [part.names["augmented"]])


def _helper_search(helper_file: str):
    """``search(queries, k)`` of a part's helper index (read now; let go with the function)."""
    helper = faiss.read_index(helper_file)
    if isinstance(helper, faiss.IndexHNSW):  # neighbours to average need not be exact (as the in-process build's helper)
        helper.hnsw.efSearch = HELPER_EF_SEARCH
    return helper.search


def write_part_faiss(path: str, part: Part, searched: str, factory: str, trained_file: str | None) -> None:
    """The segment's FAISS index over its searched vectors: built, or added to the index's trained empty one."""
    vectors = np.load(Path(path) / part.names[searched], mmap_mode="r")
    index = segment_index(vectors, factory, Path(path) / trained_file if trained_file is not None else None)
    scratch = _scratch(path)
    write_faiss(index, scratch / part.names["faiss"])
    _publish(path, scratch, [part.names["faiss"]])


__all__ = ["MAX_PART_ROWS", "MIN_PART_ROWS", "Part", "part_count", "plan_parts", "write_generation_on"]

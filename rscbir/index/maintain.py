"""Maintenance: remove scenes or dates from an index, and compact its segments into one.

Both write new segment files and commit them with the manifest swap, like an append: a failure or a
kill leaves the index as it was, and the next run removes the unfinished files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from rscbir.dates import normalise_date
from rscbir.errors import IndexFileError, QueryError
from rscbir.index.commit import Generation, remove_orphans
from rscbir.index.faiss_types import auto_index_type, write_faiss
from rscbir.index.layout import segment_names
from rscbir.index.manifest import Manifest, SegmentRecord, Trained
from rscbir.index.reader import Index
from rscbir.index.segment import Segment
from rscbir.index.writers import copy_rows, merge_catalogs, segment_faiss

MAX_SEGMENTS = 16  # an append past this many segments compacts the index (one search per segment adds up)


def remove_from_index(path: str | os.PathLike, scene_ids: Sequence[str] = (), dates: Sequence[str] = ()) -> tuple[Index, list[str]]:
    """Remove every patch of the scenes ``scene_ids`` and of the ``dates`` from the index; returns the index and the
    scene ids removed.

    Segments without a removed scene stay as they are; a segment holding only removed scenes is dropped;
    one holding both is rewritten with the rows it keeps (their vectors and augmented vectors as stored).
    Removing every scene is refused (delete the folder instead).
    """
    path = Path(path)
    existing = Index.open(path)
    remove_orphans(path, existing.manifest)
    known = {s.scene_id: s for s in existing.manifest.scenes}
    wanted_dates = {normalise_date(d) for d in dates}
    unknown = [s for s in scene_ids if s not in known]
    if unknown:
        raise QueryError(f"{path}: no scene {', '.join(map(repr, unknown))} in the index (scenes: {', '.join(known)})")
    missing_dates = wanted_dates - {s.date for s in known.values()}
    if missing_dates:
        raise QueryError(f"{path}: no scene dated {', '.join(sorted(missing_dates))} in the index")
    removed = [sid for sid, s in known.items() if sid in scene_ids or s.date in wanted_dates]
    if len(removed) == len(known):
        raise IndexFileError(f"{path}: that would remove every scene; delete the folder to remove the whole index")
    keep = ~existing.scene_mask(removed)
    old = existing.manifest
    kept_segments, groups = [], []
    for segment in existing.segments:
        local = keep[segment.offset : segment.offset + segment.count]
        if local.all():
            kept_segments.append(segment.record)
        elif local.any():
            kept_segments.append(len(groups))
            groups.append(([segment], [np.flatnonzero(local)]))
    with Generation(path, old) as change:
        records, trained = _rewrite_segments(change, existing, groups)
        manifest = old.replace(
            generation=old.generation + 1,
            count=int(keep.sum()),
            scenes=tuple(s for s in old.scenes if s.scene_id not in removed),
            segments=tuple(records[kept] if isinstance(kept, int) else kept for kept in kept_segments),
        ).with_trained(trained)
        change.commit(manifest)
    return Index.open(path), removed


def compact_index(path: str | os.PathLike) -> tuple[Index, int]:
    """Merge every segment of the index into one (same ids, same answers); returns the index and the number of
    segments merged (0: nothing to do). Types that need training are trained again on all the vectors."""
    path = Path(path)
    existing = Index.open(path)
    remove_orphans(path, existing.manifest)
    if len(existing.segments) <= 1:
        return existing, 0
    old = existing.manifest
    with Generation(path, old) as change:
        groups = [(existing.segments, [np.arange(s.count) for s in existing.segments])]
        records, trained = _rewrite_segments(change, existing, groups, retrain=True)
        manifest = old.replace(generation=old.generation + 1, segments=tuple(records), index_type=records[0].index_type)
        change.commit(manifest.with_trained(trained))
    return Index.open(path), len(existing.segments)


def _rewrite_segments(change: Generation, existing: Index, groups: list[tuple[list[Segment], list[np.ndarray]]],
                      retrain: bool = False) -> tuple[list[SegmentRecord], Trained | None]:  # fmt: skip
    """Write one new segment per group of (segments, kept local rows of each) as part of ``change``; returns their
    records and the trained quantizer the manifest records from now on."""
    old: Manifest = existing.manifest
    path, generation = change.path, old.generation + 1
    records, next_id, trained = [], old.next_segment_id(), old.trained
    for segments, kept in groups:
        augmented = all(s.augmented is not None for s in segments)
        names = segment_names(next_id, augmented)
        change.add(*names.values())
        dim, dtype = segments[0].vectors.shape[1], segments[0].vectors.dtype
        vectors = copy_rows(path / names["vectors"], [(s.vectors, rows) for s, rows in zip(segments, kept)], dim, dtype)
        searched = vectors
        if augmented:
            searched = copy_rows(path / names["augmented"], [(s.augmented, rows) for s, rows in zip(segments, kept)], dim, dtype)
        lookup = merge_catalogs(path, list(zip(segments, kept)), names)
        factory = auto_index_type(len(vectors)) if old.index_type_requested == "auto" else old.index_type_requested
        if not retrain and len(segments) == 1 and segments[0].record.index_type:
            factory = segments[0].record.index_type
        index, trained = segment_faiss(change, searched, factory, trained, generation, retrain)
        write_faiss(index, path / names["faiss"])
        records.append(SegmentRecord(next_id, len(vectors), tuple(lookup["scene_ids"]), factory, names, lookup))
        next_id += 1
    return records, trained


__all__ = ["MAX_SEGMENTS", "compact_index", "remove_from_index"]

"""Co-located pairs: patches of two dates on one grid, read side by side; and the stored vectors of the same
(row, col) at two dates of an index, with the distance every change and query computes from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

import geopandas as gpd
import numpy as np
from rasterio.enums import Resampling

from rscbir.grid import Grid
from rscbir.scene import Scene
from rscbir.tiling import PatchRecord, TilingConfig, iter_patches

if TYPE_CHECKING:
    from rscbir.index.manifest import SceneRecord
    from rscbir.index.reader import Index


@dataclass
class PairBatch:
    records: list[PatchRecord]  # the before-date records (same ground as after)
    before: np.ndarray  # (n, bands, h, w) raw
    after: np.ndarray


def paired_patches(before: Scene, after: Scene, tiling: TilingConfig, grid: Grid, batch: int = 16,
                   resampling: Resampling = Resampling.bilinear, rows: Sequence[int] | None = None) -> Iterator[PairBatch]:  # fmt: skip
    """Batches of co-located patches present (not nodata) in both dates, row-major (only patch ``rows`` when given)."""
    a_iter = iter_patches(before, tiling, grid, resampling=resampling, rows=rows)
    b_iter = iter_patches(after, tiling, grid, resampling=resampling, rows=rows)
    pending: list = []
    a, b = next(a_iter, None), next(b_iter, None)
    while a is not None and b is not None:
        ka, kb = (a.record.row, a.record.col), (b.record.row, b.record.col)
        if ka == kb:
            pending.append((a, b))
            a, b = next(a_iter, None), next(b_iter, None)
        elif ka < kb:
            a = next(a_iter, None)
        else:
            b = next(b_iter, None)
        if len(pending) == batch:
            yield _batch(pending)
            pending = []
    if pending:
        yield _batch(pending)


def _batch(pairs) -> PairBatch:
    return PairBatch([p.record for p, _ in pairs], np.stack([p.data for p, _ in pairs]), np.stack([q.data for _, q in pairs]))


def cosine_distance(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """1 - cosine of row-aligned L2-normalised vectors: the change magnitude of each co-located pair."""
    return 1 - np.sum(np.asarray(before, np.float32) * np.asarray(after, np.float32), axis=1)


@dataclass
class IndexedPair:
    """Two dates of an aligned index, patch by patch: the scene records, the row-aligned catalog rows of the
    patches indexed at both dates, and their stored vectors."""

    before: SceneRecord
    after: SceneRecord
    rows_before: gpd.GeoDataFrame
    rows_after: gpd.GeoDataFrame
    vectors_before: np.ndarray
    vectors_after: np.ndarray

    @property
    def distance(self) -> np.ndarray:
        """1 - cosine of each place's two vectors (:func:`cosine_distance`)."""
        return cosine_distance(self.vectors_before, self.vectors_after)


def indexed_pair(index: Index, dates: Sequence[str]) -> IndexedPair:
    """The co-located patches of two dates of an aligned index (earliest first) and their stored vectors."""
    before, after = index.scenes_on(dates)
    rows_a, rows_b, va, vb = index.co_located(before.scene_id, after.scene_id)
    return IndexedPair(before, after, rows_a, rows_b, va, vb)


__all__ = ["PairBatch", "paired_patches", "cosine_distance", "IndexedPair", "indexed_pair"]

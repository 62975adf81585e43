"""Scaled patches of a scene as a torch ``IterableDataset``, for a DataLoader with reader processes (torch only)."""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from rasterio.enums import Resampling
from torch.utils.data import IterableDataset, get_worker_info

from rscbir.grid import Grid
from rscbir.scene import Scene
from rscbir.tiling import TilingConfig, iter_patches


class PatchStream(IterableDataset):
    """Scaled patches of one scene on a grid (``rows``: only these patch rows); each
    DataLoader worker takes every n-th of them."""

    def __init__(self, scene: Scene, grid: Grid, tiling: TilingConfig, resampling: Resampling = Resampling.bilinear,
                 rows: Sequence[int] | None = None) -> None:  # fmt: skip
        self.scene, self.grid, self.tiling, self.resampling = scene, grid, tiling, resampling
        self.rows = list(rows) if rows is not None else list(range(tiling.layout(grid)[0]))

    def __iter__(self) -> Iterator[tuple[int, int, float, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        rows = self.rows[worker::workers]
        for patch in iter_patches(self.scene, self.tiling, self.grid, resampling=self.resampling, rows=rows):
            record = patch.record
            yield record.row, record.col, record.nodata_fraction, torch.from_numpy(self.scene.scale(patch.data))


__all__ = ["PatchStream"]

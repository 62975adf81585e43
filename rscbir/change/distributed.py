"""Change on Dask: the patch rows of a pair scored by workers, the map made in strips by the driver, with the same
result as one process.

The driver measures the pair's radiometry once (:class:`PairRadiometry`) and splits the patch rows into blocks.
A task reopens both scenes from their records, loads the model once per worker process, scores its block
(:func:`score_rows`) and writes the per-pixel scores of its patches to a shard file, atomically; only the records
and per-patch scores travel back through Dask. The driver takes the blocks in row order and adds the patches to
its rolling mosaics in the order one process adds them, so the maps, the areas and the per-patch table equal the
in-process ones exactly. A task lost with its worker is run again (shards are named by block: a rerun overwrites).
Workers must see the scratch folder: a local cluster, or a shared file system (set ``TMPDIR`` to it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from rscbir.atomic import atomic_path
from rscbir.change.scores import PairRadiometry, RowScores, pair_radiometry, patch_frame, score_rows
from rscbir.grid import Grid
from rscbir.scene import Scene
from rscbir.tiling import TilingConfig

ROWS_PER_TASK = 4
_MODELS: dict[str, tuple] = {}  # per worker process: (model config, runtime) -> (model, pair distances)


class _Collected:
    """Stands in for a mosaic inside a task: keeps the per-pixel scores of each patch, in the order they came."""

    def __init__(self) -> None:
        self.records: list = []
        self.values: list = []

    def add(self, records, values) -> None:
        self.records += list(records)
        self.values.append(np.asarray(values, np.float32))


def score_block(scene_docs: list[dict], grid_doc: dict, tiling_doc: dict, config_doc: dict | None, runtime: str, radiometry_doc: dict,
                rows: list[int], pixel_maps: list[str], shard: str) -> tuple[RowScores, dict[str, list]]:  # fmt: skip
    """Task body: score patch ``rows`` of the pair; per-pixel scores go to ``shard`` (.npz, one array per map)."""
    before, after, spectral_before, spectral_after = (Scene.from_dict(doc) for doc in scene_docs)
    grid, tiling = Grid.from_dict(grid_doc), TilingConfig.from_dict(tiling_doc)
    model, distances = _worker_model(config_doc, runtime, "dense" in pixel_maps)
    collected = {name: _Collected() for name in pixel_maps}
    part = score_rows(before, after, model, tiling, grid, PairRadiometry.from_dict(radiometry_doc), (spectral_before, spectral_after),
                      mosaics=collected, rows=rows, cnn_distances=distances)  # fmt: skip
    arrays = {name: np.concatenate(c.values) if c.values else np.zeros((0, 1, 1), np.float32) for name, c in collected.items()}
    with atomic_path(shard) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    return part, {name: c.records for name, c in collected.items()}


def _worker_model(config_doc: dict | None, runtime: str, pixel_maps: bool):
    if config_doc is None:
        return None, None
    key = json.dumps([config_doc, runtime, pixel_maps], sort_keys=True)
    if key not in _MODELS:
        import torch

        from rscbir.change.cnn import distances_for
        from rscbir.models.config import ModelConfig
        from rscbir.models.load import model_from_config
        from rscbir.scale import worker_threads

        torch.set_num_threads(worker_threads())
        model = model_from_config(ModelConfig.from_dict(config_doc)).eval()
        _MODELS[key] = (model, distances_for(model, pixel_maps, runtime))
    return _MODELS[key]


def score_patches_on(client, before: Scene, after: Scene, model, tiling: TilingConfig, grid: Grid,
                     spectral: tuple[Scene, Scene] | None = None, mosaics: dict | None = None, runtime="auto",
                     scratch: Path | None = None, rows_per_task: int = ROWS_PER_TASK):  # fmt: skip
    """:func:`rscbir.change.scores.score_patches` with the patch rows scored on Dask (``client``); the per-pixel
    scores reach ``mosaics`` in row-major order, as in one process. ``scratch`` holds the shards (workers must see it)."""
    import tempfile

    mosaics = mosaics or {}
    spectral = spectral or (before, after)
    radiometry = pair_radiometry(before, after, tiling, grid, spectral, model is not None)
    n_rows = tiling.layout(grid)[0]
    own = scratch is None
    folder = Path(tempfile.mkdtemp(prefix="rscbir-change-shards-")) if own else Path(scratch)
    docs = [s.to_dict() for s in (before, after, *spectral)]
    config = model.config.to_dict() if model is not None else None
    runtime = getattr(runtime, "value", runtime)
    futures = [
        (start, client.submit(score_block, docs, grid.to_dict(), tiling.to_dict(), config, runtime, radiometry.to_dict(),
                      list(range(start, min(start + rows_per_task, n_rows))), sorted(mosaics), str(folder / f"rows-{start:06d}.npz"),
                      key=f"change-rows-{start}-{os.getpid()}-{id(folder)}", retries=3, pure=False))  # fmt: skip
        for start in range(0, n_rows, rows_per_task)
    ]
    parts = []
    try:
        for start, future in futures:  # in row order: the mosaics take patches top to bottom, as in one process
            part, records = future.result()
            shard = folder / f"rows-{start:06d}.npz"
            with np.load(shard) as arrays:
                for name, mosaic in mosaics.items():
                    if records[name]:
                        mosaic.add(records[name], arrays[name])
            shard.unlink()
            parts.append(part)
    finally:
        for _, future in futures:
            future.cancel()
        if own:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
    return patch_frame(parts, grid, before, after, model is not None)


__all__ = ["ROWS_PER_TASK", "score_block", "score_patches_on"]

"""Scale out: embed patch rows as Dask tasks, with the same result as one process.

The driver splits each scene into blocks of patch rows. A task reopens the
scene from its record (same files, bands, scaling statistics), reads its rows
on the common grid, embeds them with a model loaded once per worker process,
and writes a shard atomically. The driver appends the shards to the store in
whatever order they finish; rows are sorted afterwards, so patch ids and
vectors equal the in-process result. A task lost with its worker is run again
(Dask reschedules it; shards are named by row block, so a rerun overwrites and
nothing is duplicated).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from rscbir.grid import Grid
from rscbir.scene import Scene
from rscbir.tiling import TilingConfig, patch_layout

log = logging.getLogger(__name__)
ROWS_PER_TASK = 4
_MODELS: dict[str, object] = {}  # per worker process: model config -> forward callable


def connect(scheduler: str):
    """A Dask client: ``local`` starts a LocalCluster (one single-threaded worker per core)."""
    from distributed import Client, LocalCluster

    from rscbir.errors import RscbirError

    if scheduler == "local":
        cluster = LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1, processes=True, dashboard_address=None)
        return Client(cluster)
    try:
        return Client(scheduler, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise RscbirError(f"cannot reach the Dask scheduler at {scheduler} ({exc}); start one or use --scheduler local") from None


def _worker_forward(config_doc: dict, runtime: str, device: str):
    key = json.dumps([config_doc, runtime, device], sort_keys=True)
    if key not in _MODELS:
        from rscbir.models.load import ModelConfig, model_from_config
        from rscbir.models.runtime import forward_for

        threads = 1
        try:
            from distributed import get_worker

            threads = max(1, int(get_worker().state.nthreads))
        except (ImportError, ValueError, AttributeError):
            pass
        import torch

        torch.set_num_threads(threads)
        model = model_from_config(ModelConfig.from_dict(config_doc))
        _MODELS[key] = forward_for(model, runtime, device, threads=threads)
    return _MODELS[key]


def embed_rows(scene_doc: dict, grid_doc: dict, tiling_doc: dict, config_doc: dict, runtime: str, device: str,
               batch_size: int, rows: list[int], shard: str) -> tuple[str, int]:  # fmt: skip
    """Task body: embed patch ``rows`` of a scene and write ``shard`` (keys + float32 vectors)."""
    forward = _worker_forward(config_doc, runtime, device)
    scene = Scene.from_dict(scene_doc)
    grid = Grid.from_dict(grid_doc)
    tiling = TilingConfig(**tiling_doc)
    from torch.utils.data import DataLoader

    from rscbir.embed import PatchStream, embed_batches

    loader = DataLoader(PatchStream(scene, grid, tiling, rows=rows), batch_size=batch_size)
    keys, vectors = [], []
    for batch_keys, batch_vectors in embed_batches(forward, loader):
        keys.append(batch_keys)
        vectors.append(batch_vectors)
    target = Path(shard)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, keys=np.concatenate(keys) if keys else np.zeros((0, 3)),
                 vectors=np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32))  # fmt: skip
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)
    return str(target), sum(len(k) for k in keys)


def embed_scene_tasks(client, scene: Scene, grid: Grid, config, tiling: TilingConfig, options, raw, work: Path) -> np.ndarray:
    """Embed one scene on the cluster; vectors appended to ``raw`` as shards finish; returns keys."""
    from distributed import as_completed

    n_rows = patch_layout(grid, *tiling.pixels(grid), tiling.edge)[0]
    shards = work / "shards" / scene.scene_id
    shards.mkdir(parents=True, exist_ok=True)
    tiling_doc = {"patch_size": tiling.patch_size, "stride": tiling.stride, "edge": tiling.edge.value, "max_nodata": tiling.max_nodata}
    scene_doc, grid_doc, config_doc = scene.to_dict(), grid.to_dict(), config.to_dict()
    futures = [
        client.submit(embed_rows, scene_doc, grid_doc, tiling_doc, config_doc, options.runtime, options.device,
                      options.batch_size, list(range(start, min(start + ROWS_PER_TASK, n_rows))),
                      str(shards / f"rows-{start:06d}.npz"), key=f"embed-{scene.scene_id}-{start}-{os.getpid()}",
                      retries=3, pure=False)  # fmt: skip
        for start in range(0, n_rows, ROWS_PER_TASK)
    ]
    all_keys = []
    for future in as_completed(futures):
        path, count = future.result()
        with np.load(path) as shard:
            if count:
                raw.write(shard["vectors"].astype(options.dtype).tobytes())
                all_keys.append(shard["keys"])
        Path(path).unlink()
    return np.concatenate(all_keys) if all_keys else np.zeros((0, 3))

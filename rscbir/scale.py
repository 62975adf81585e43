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

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
from torch.utils.data import DataLoader

from rscbir.atomic import atomic_path
from rscbir.embed import EmbedOptions, embed_batches
from rscbir.errors import SchedulerError
from rscbir.grid import Grid
from rscbir.models.features import FeatureModel, ModelConfig
from rscbir.models.load import model_from_config
from rscbir.models.runtime import forward_for
from rscbir.patch_stream import PatchStream
from rscbir.scene import Scene
from rscbir.tiling import TilingConfig

log = logging.getLogger(__name__)
ROWS_PER_TASK = 4
_MODELS: dict[str, object] = {}  # per worker process: model config -> forward callable


def connect(scheduler: str):
    """A Dask client: ``local`` starts a LocalCluster (one single-threaded worker per core)."""
    from distributed import Client, LocalCluster

    if scheduler == "local":
        cluster = LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.INFO if log.isEnabledFor(logging.INFO) else logging.WARNING)  # fmt: skip
        return Client(cluster)
    try:
        return Client(scheduler, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise SchedulerError(f"cannot reach the Dask scheduler at {scheduler} ({exc}); start one or use --scheduler local") from None


def worker_threads() -> int:
    """The threads of the Dask worker this runs in (1 outside a worker): what its model may use."""
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        return 1


def _worker_forward(config_doc: dict, runtime: str, device: str):
    key = json.dumps([config_doc, runtime, device], sort_keys=True)
    if key not in _MODELS:
        threads = worker_threads()
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
    tiling = TilingConfig.from_dict(tiling_doc)
    loader = DataLoader(PatchStream(scene, grid, tiling, rows=rows), batch_size=batch_size)
    keys, vectors = [], []
    for batch_keys, batch_vectors in embed_batches(forward, loader):
        keys.append(batch_keys)
        vectors.append(batch_vectors)
    with atomic_path(shard) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, keys=np.concatenate(keys) if keys else np.zeros((0, 3)),
                 vectors=np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32))  # fmt: skip
    return str(shard), sum(len(k) for k in keys)


class DaskRunner:
    """Embeds a scene's patch rows as Dask tasks; a :class:`rscbir.embed.Runner` for ``embed_scenes``."""

    def __init__(self, client, model: FeatureModel, options: EmbedOptions = EmbedOptions()) -> None:
        self.client, self.options = client, options
        self.config: ModelConfig = model.config

    def __call__(self, scene: Scene, grid: Grid, tiling: TilingConfig, raw: BinaryIO, work: Path) -> np.ndarray:
        """Vectors appended to ``raw`` as shards finish; returns keys (n, 3)."""
        from distributed import as_completed

        options = self.options
        n_rows = tiling.layout(grid)[0]
        shards = work / "shards" / scene.scene_id
        shards.mkdir(parents=True, exist_ok=True)
        scene_doc, grid_doc, config_doc = scene.to_dict(), grid.to_dict(), self.config.to_dict()
        futures = [
            self.client.submit(embed_rows, scene_doc, grid_doc, tiling.to_dict(), config_doc, options.runtime.value,
                               options.device.value, options.batch_size, list(range(start, min(start + ROWS_PER_TASK, n_rows))),
                               str(shards / f"rows-{start:06d}.npz"), key=f"embed-{scene.scene_id}-{start}-{os.getpid()}",
                               retries=3, pure=False)  # fmt: skip
            for start in range(0, n_rows, ROWS_PER_TASK)
        ]
        all_keys = []
        for future in as_completed(futures):
            path, count = future.result()
            with np.load(path) as shard:
                if count:
                    raw.write(shard["vectors"].astype(options.numpy_dtype).tobytes())
                    all_keys.append(shard["keys"])
            Path(path).unlink()
        shutil.rmtree(work / "shards", ignore_errors=True)
        return np.concatenate(all_keys) if all_keys else np.zeros((0, 3))


@contextlib.contextmanager
def dask_client(scheduler: str) -> Iterator[object]:
    """A Dask client on ``scheduler`` (``local`` or an address, see :func:`connect`); the client, and a
    LocalCluster it started, are closed on exit."""
    client = connect(scheduler)
    try:
        yield client
    finally:
        cluster = getattr(client, "cluster", None)
        client.close()
        if cluster is not None:
            cluster.close()


@contextlib.contextmanager
def dask_runner(scheduler: str, model: FeatureModel, options: EmbedOptions = EmbedOptions()) -> Iterator[DaskRunner]:
    """A :class:`DaskRunner` on ``scheduler`` (``local`` or an address), its client closed on exit."""
    with dask_client(scheduler) as client:
        yield DaskRunner(client, model, options)

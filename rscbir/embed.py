"""Stream patches through a feature model into an on-disk embedding store.

Tiler windows feed a ``DataLoader`` whose worker processes read and scale
patch rows while the main process runs the model under
``torch.inference_mode`` in ``channels_last``. Vectors are appended to disk
batch by batch, never held as a list of tensors; memory is bounded by the
batch size. The store is written to a temporary folder and swapped in at the
end, so a failed run leaves the previous store (or nothing) behind.

A store folder holds::

    catalog.parquet   patch rows (see rscbir.catalog); row i <-> vector i
    vectors.npy       (N, dim) float16 or float32, L2-normalised
    model.json        ModelConfig + tiling + per-scene scaling: how to embed again
    pca.npz           PCA-whitening, when ``dim`` was reduced
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import geopandas as gpd
import numpy as np
import torch
from rasterio.enums import Resampling
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from rscbir.catalog import concat, read_catalog, records_to_frame
from rscbir.errors import OutputError, RscbirError
from rscbir.grid import Grid
from rscbir.models.features import FeatureModel
from rscbir.models.load import ModelConfig
from rscbir.models.runtime import forward_for
from rscbir.models.whitening import PCAWhitening
from rscbir.scene import Scene
from rscbir.tiling import TilingConfig, aligned_grid, iter_patches, make_record, patch_layout

log = logging.getLogger(__name__)
STORE_VERSION = 1


class PatchStream(IterableDataset):
    """Scaled patches of one scene on a grid (``rows``: only these patch rows); each
    DataLoader worker takes every n-th of them."""

    def __init__(self, scene: Scene, grid: Grid, tiling: TilingConfig, resampling: Resampling = Resampling.bilinear,
                 rows: Sequence[int] | None = None) -> None:  # fmt: skip
        self.scene, self.grid, self.tiling, self.resampling = scene, grid, tiling, resampling
        self.rows = list(rows) if rows is not None else list(range(patch_layout(grid, *tiling.pixels(grid), tiling.edge)[0]))

    def __iter__(self) -> Iterator[tuple[int, int, float, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        rows = self.rows[worker::workers]
        for patch in iter_patches(self.scene, self.tiling, self.grid, resampling=self.resampling, rows=rows):
            record = patch.record
            yield record.row, record.col, record.nodata_fraction, torch.from_numpy(self.scene.scale(patch.data))


@dataclass(frozen=True)
class EmbedOptions:
    """How to run inference."""

    batch_size: int = 16  # larger batches run slower on small CPUs (cache), see benchmarks/results.md
    workers: int | None = None  # reader processes; None: 0 on <= 2 cores (they only steal CPU there), else 2
    runtime: str = "auto"
    dtype: str = "float16"
    dim: int | None = None  # PCA to this many dimensions
    whiten: float = 0.0  # whitening power: 0 centred PCA, 0.5 full whitening
    resampling: Resampling = Resampling.bilinear
    progress: bool = False
    device: str = "auto"  # auto: CUDA when torch sees a GPU, else CPU


def embed_batches(forward, loader: DataLoader) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (keys (B, 3) row/col/nodata, vectors (B, dim) float32) per batch."""
    for rows, cols, nodata, x in loader:
        vectors = forward(x).float().numpy()
        keys = np.stack([rows.numpy(), cols.numpy(), nodata.numpy()], axis=1)
        yield keys, vectors


def embed_scenes(
    scenes: Sequence[Scene],
    output: str | os.PathLike,
    model: FeatureModel,
    config: ModelConfig,
    tiling: TilingConfig = TilingConfig(),
    align: bool = False,
    options: EmbedOptions = EmbedOptions(),
    grid: Grid | None = None,
    client=None,
) -> "EmbeddingStore":
    """Tile, embed and store every patch of ``scenes`` in the folder ``output``.

    With ``align`` all scenes are read onto their common grid, so the vectors of
    the same (row, col) describe the same ground in every date; ``grid`` names
    that grid explicitly (e.g. one shared with scenes embedded elsewhere).
    With a Dask ``client`` the patch rows are embedded as tasks on its workers
    (see :mod:`rscbir.scale`); the store is the same.
    """
    output = Path(output)
    if output.exists() and not (output / "model.json").exists() and any(output.iterdir()):
        raise OutputError(f"{output}: exists and is not an embedding store; choose a new folder")
    if not output.parent.exists():
        raise OutputError(f"{output}: parent folder {output.parent} does not exist")
    forward = forward_for(model, options.runtime, options.device) if client is None else None
    if grid is None and align:
        grid = aligned_grid(scenes)
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(work, 0o777 & ~umask)  # mkdtemp makes it private; the store is an ordinary folder
    try:
        raw_path = work / "vectors.raw"
        frames, keys_all, total = [], [], 0
        with open(raw_path, "wb") as raw:
            for scene in scenes:
                scene_grid = grid or scene.grid
                if scene.scaling.mode.value == "percentile":
                    scene.band_stats()  # once, before workers fork or tasks ship, so all share it
                if client is None:
                    keys = _embed_local(scene, scene_grid, forward, tiling, options, raw)
                else:
                    from rscbir.scale import embed_scene_tasks

                    keys = embed_scene_tasks(client, scene, scene_grid, config, tiling, options, raw, work)
                order = np.lexsort((keys[:, 1], keys[:, 0]))  # row-major, whatever order workers finished in
                size, stride = tiling.pixels(scene_grid)
                records = [make_record(scene, scene_grid, int(r), int(c), size, stride, float(f)) for r, c, f in keys[order]]
                frames.append(records_to_frame(records, scene_grid.crs))
                keys_all.append(total + order)
                total += len(keys)
        permutation = np.concatenate(keys_all) if keys_all else np.zeros(0, dtype=np.int64)
        source = np.memmap(raw_path, dtype=options.dtype, mode="r", shape=(total, config.dim)) if total else np.zeros((0, config.dim), options.dtype)
        catalog = concat(frames)
        catalog["vector"] = np.arange(len(catalog), dtype=np.int64)

        pca = None
        if options.dim:
            sample = source[np.sort(np.random.default_rng(0).permutation(total)[:200_000])] if total else source
            pca = PCAWhitening.fit(np.asarray(sample, dtype=np.float32), options.dim, options.whiten)
            pca.save(work / "pca.npz")
        out_dim = pca.dim if pca else config.dim
        target = np.lib.format.open_memmap(work / "vectors.npy", mode="w+", dtype=options.dtype, shape=(total, out_dim))
        for start in range(0, total, 65536):
            chunk = np.asarray(source[permutation[start : start + 65536]], dtype=np.float32)
            target[start : start + len(chunk)] = pca.transform(chunk) if pca else chunk
        target.flush()
        del target, source
        raw_path.unlink()

        catalog.to_parquet(work / "catalog.parquet", index=False)
        meta = {
            "format": "rscbir-embeddings",
            "version": STORE_VERSION,
            "model": config.to_dict(),
            "pca_dim": pca.dim if pca else None,
            "dim": out_dim,
            "dtype": options.dtype,
            "tiling": {k: (v.value if hasattr(v, "value") else v) for k, v in asdict(tiling).items()},
            "aligned": bool(align),
            "scenes": [s.to_dict() for s in scenes],
        }
        (work / "model.json").write_text(json.dumps(meta, indent=2))
        shutil.rmtree(work / "shards", ignore_errors=True)  # emptied as the driver read them (Dask runs)
        for path in work.iterdir():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        _swap_in(work, output)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return EmbeddingStore.open(output)


def _embed_local(scene: Scene, grid: Grid, forward, tiling: TilingConfig, options: EmbedOptions, raw) -> np.ndarray:
    """Embed one scene in this process; vectors appended to ``raw``; returns keys (n, 3)."""
    stream = PatchStream(scene, grid, tiling, options.resampling)
    workers = options.workers if options.workers is not None else (0 if (os.cpu_count() or 1) <= 2 else 2)
    loader = DataLoader(stream, batch_size=options.batch_size, num_workers=workers)
    batches = embed_batches(forward, loader)
    if options.progress:
        from tqdm import tqdm

        n_rows, n_cols = patch_layout(grid, *tiling.pixels(grid), tiling.edge)
        batches = tqdm(batches, total=-(-n_rows * n_cols // options.batch_size), desc=scene.scene_id, unit="batch")
    scene_keys = []
    for keys, vectors in batches:
        raw.write(vectors.astype(options.dtype).tobytes())
        scene_keys.append(keys)
    return np.concatenate(scene_keys) if scene_keys else np.zeros((0, 3))


def _swap_in(work: Path, output: Path) -> None:
    """Replace ``output`` by ``work`` with renames only."""
    if output.exists():
        old = output.with_name(f".{output.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(output, old)
        os.replace(work, output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(work, output)


@dataclass
class EmbeddingStore:
    """An embedding store folder, opened read-only."""

    path: Path
    meta: dict
    catalog: gpd.GeoDataFrame
    vectors: np.ndarray  # memory-mapped

    @classmethod
    def open(cls, path: str | os.PathLike) -> "EmbeddingStore":
        path = Path(path)
        try:
            meta = json.loads((path / "model.json").read_text())
            catalog = read_catalog(path / "catalog.parquet")
            vectors = np.load(path / "vectors.npy", mmap_mode="r")
        except (OSError, ValueError, KeyError) as exc:
            raise RscbirError(f"{path}: not a readable embedding store ({exc}); re-run `rscbir embed`") from None
        if len(catalog) != len(vectors):
            raise RscbirError(f"{path}: catalog has {len(catalog)} rows but {len(vectors)} vectors; re-run `rscbir embed`")
        return cls(path, meta, catalog, vectors)

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.meta["model"])

    @property
    def pca(self) -> PCAWhitening | None:
        return PCAWhitening.load(self.path / "pca.npz") if self.meta.get("pca_dim") else None

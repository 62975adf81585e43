"""Stream patches through a feature model into an on-disk embedding store.

Tiler windows are read and scaled into numpy batches for the model graph kept in
the cache (:class:`rscbir.models.onnx_cache.CachedModel`: no torch in the
process), or feed a torch ``DataLoader`` whose worker processes read patch rows
while the main process runs the torch-built model. Vectors are appended to disk
batch by batch, never held as a list of tensors; memory is bounded by the
batch size. The store is written to a temporary folder and swapped in at the
end (:func:`rscbir.atomic.atomic_dir`), so a failed run leaves the previous
store (or nothing) behind.

Who runs the model is a *runner*: :class:`LocalRunner` in this process (the
default) or :class:`rscbir.scale.DaskRunner` on a cluster; both return the
same store.

The store's layout and reader live in :mod:`rscbir.store`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Iterator, Protocol, Sequence

import geopandas as gpd
import numpy as np
from rasterio.enums import Resampling

from rscbir.atomic import atomic_dir
from rscbir.catalog import concat, records_to_frame
from rscbir.errors import OutputError
from rscbir.grid import Grid
from rscbir.models.onnx_cache import CachedModel
from rscbir.modes import Runtime
from rscbir.models.whitening import PCAWhitening
from rscbir.progress import track
from rscbir.scene import Scene
from rscbir.store import DEFAULT_DIM, STORE_VERSION, EmbeddingStore, EmbedOptions
from rscbir.tiling import TilingConfig, aligned_grid, iter_patches, make_record

if TYPE_CHECKING:
    from rscbir.models.features import FeatureModel

log = logging.getLogger(__name__)


def __getattr__(name: str):
    if name == "PatchStream":  # a torch Dataset: defined where torch is imported
        from rscbir.patch_stream import PatchStream

        return PatchStream
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def numpy_batches(scene: Scene, grid: Grid, tiling: TilingConfig, resampling: Resampling, batch_size: int) -> Iterator[tuple]:
    """(rows, cols, nodata fractions, scaled patches (B, bands, H, W)) per batch, in numpy: no torch needed."""
    part: list = []
    for patch in iter_patches(scene, tiling, grid, resampling=resampling):
        part.append((patch.record.row, patch.record.col, patch.record.nodata_fraction, scene.scale(patch.data)))
        if len(part) == batch_size:
            yield _stacked(part)
            part = []
    if part:
        yield _stacked(part)


def _stacked(part: list) -> tuple:
    rows, cols, nodata, data = zip(*part)
    return np.asarray(rows), np.asarray(cols), np.asarray(nodata, np.float64), np.stack(data).astype(np.float32, copy=False)


def embed_batches(forward, loader) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (keys (B, 3) row/col/nodata, vectors (B, dim) float32) per batch (torch tensors or numpy arrays)."""
    for rows, cols, nodata, x in loader:
        vectors = np.asarray(forward(x), dtype=np.float32)
        keys = np.stack([np.asarray(rows), np.asarray(cols), np.asarray(nodata)], axis=1)
        yield keys, vectors


class Runner(Protocol):
    """Embeds every patch of one scene on a grid: vectors appended to ``raw``, keys (n, 3) returned."""

    def __call__(self, scene: Scene, grid: Grid, tiling: TilingConfig, raw: BinaryIO, work: Path) -> np.ndarray: ...


class LocalRunner:
    """Runs the model in this process (DataLoader workers read patches when there are cores to spare)."""

    def __init__(self, model: FeatureModel | CachedModel, options: EmbedOptions = EmbedOptions()) -> None:
        if isinstance(model, CachedModel):  # the cached ONNX graph: patches in numpy, no torch in this process
            self.forward = model
        else:
            from rscbir.models.runtime import forward_for

            self.forward = forward_for(model, options.runtime, options.device)
        self.options = options

    def __call__(self, scene: Scene, grid: Grid, tiling: TilingConfig, raw: BinaryIO, work: Path) -> np.ndarray:
        options = self.options
        workers = options.workers if options.workers is not None else (0 if (os.cpu_count() or 1) <= 2 else 2)
        if isinstance(self.forward, CachedModel) and workers == 0:
            loader = numpy_batches(scene, grid, tiling, options.resampling, options.batch_size)
        else:
            from torch.utils.data import DataLoader

            from rscbir.patch_stream import PatchStream

            loader = DataLoader(PatchStream(scene, grid, tiling, options.resampling), batch_size=options.batch_size, num_workers=workers)
        batches = embed_batches(self.forward, loader)
        if options.progress:
            n_rows, n_cols = tiling.layout(grid)
            batches = track(batches, -(-n_rows * n_cols // options.batch_size), scene.scene_id, "batches", options.progress)
        keys = []
        for batch_keys, vectors in batches:
            raw.write(vectors.astype(options.numpy_dtype).tobytes())
            keys.append(batch_keys)
        return np.concatenate(keys) if keys else np.zeros((0, 3))


def embed_scenes(
    scenes: Sequence[Scene],
    output: str | os.PathLike,
    model: FeatureModel,
    tiling: TilingConfig = TilingConfig(),
    align: bool = False,
    options: EmbedOptions = EmbedOptions(),
    grid: Grid | None = None,
    runner: Runner | None = None,
) -> "EmbeddingStore":
    """Tile, embed and store every patch of ``scenes`` in the folder ``output``.

    With ``align`` all scenes are read onto their common grid, so the vectors of
    the same (row, col) describe the same ground in every date; ``grid`` names
    that grid explicitly (e.g. one shared with scenes embedded elsewhere).
    ``runner`` runs the model (default: :class:`LocalRunner` in this process).
    """
    output = Path(output)
    if output.exists() and not (output / "model.json").exists() and any(output.iterdir()):
        raise OutputError(f"{output}: exists and is not an embedding store; choose a new folder")
    if not output.parent.exists():
        raise OutputError(f"{output}: parent folder {output.parent} does not exist")
    runner = runner or LocalRunner(model, options)
    if grid is None and align:
        grid = aligned_grid(scenes)
    with atomic_dir(output) as work:
        catalog, permutation = _embed_raw(scenes, grid, tiling, runner, work, options.numpy_dtype)
        pca = _write_vectors(work, permutation, model.config.dim, options)
        catalog.to_parquet(work / "catalog.parquet", index=False)
        meta = {
            "format": "rscbir-embeddings",
            "version": STORE_VERSION,
            "model": model.config.to_dict(),
            "pca_dim": pca.dim if pca else None,
            "dim": pca.dim if pca else model.config.dim,
            "dtype": options.dtype.value,
            "tiling": tiling.to_dict(),
            "aligned": bool(align),
            "scenes": [s.to_dict() for s in scenes],
        }
        (work / "model.json").write_text(json.dumps(meta, indent=2))
    return EmbeddingStore.open(output)


def _embed_raw(scenes, grid, tiling, runner: Runner, work: Path, dtype) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """Embed every scene into ``work/vectors.raw`` (runner order); returns the row-major catalog and
    the permutation from catalog row to raw vector."""
    frames, order_parts, total = [], [], 0
    with open(work / "vectors.raw", "wb") as raw:
        for scene in scenes:
            scene_grid = grid or scene.grid
            if scene.scaling.mode.value == "percentile":
                scene.band_stats()  # once, before workers fork or tasks ship, so all share it
            keys = runner(scene, scene_grid, tiling, raw, work)
            order = np.lexsort((keys[:, 1], keys[:, 0]))  # row-major, whatever order workers finished in
            size, stride = tiling.pixels(scene_grid)
            records = [make_record(scene, scene_grid, int(r), int(c), size, stride, float(f), tiling.edge) for r, c, f in keys[order]]
            frames.append(records_to_frame(records, scene_grid.crs))
            order_parts.append(total + order)
            total += len(keys)
    catalog = concat(frames)
    catalog["vector"] = np.arange(len(catalog), dtype=np.int64)
    permutation = np.concatenate(order_parts) if order_parts else np.zeros(0, dtype=np.int64)
    return catalog, permutation


def _write_vectors(work: Path, permutation: np.ndarray, dim: int, options: EmbedOptions) -> PCAWhitening | None:
    """``vectors.raw`` -> ``vectors.npy`` in catalog order, through PCA when ``options.dim`` asks."""
    raw_path, total, dtype = work / "vectors.raw", len(permutation), options.numpy_dtype
    source = np.memmap(raw_path, dtype=dtype, mode="r", shape=(total, dim)) if total else np.zeros((0, dim), dtype)
    pca = None
    if options.dim and total <= options.dim:
        log.warning("only %d patches: too few to fit a %d-d PCA; the store keeps %d-d vectors", total, options.dim, dim)
    elif options.dim:
        rows = np.sort(np.random.default_rng(0).permutation(total)[:200_000])
        pca = PCAWhitening.fit_rows([(source, rows)], options.dim, options.whiten)
        pca.save(work / "pca.npz")
    target = np.lib.format.open_memmap(work / "vectors.npy", mode="w+", dtype=dtype, shape=(total, pca.dim if pca else dim))
    for start in range(0, total, 65536):
        chunk = np.asarray(source[permutation[start : start + 65536]], dtype=np.float32)
        target[start : start + len(chunk)] = pca.transform(chunk) if pca else chunk
    target.flush()
    del target, source
    raw_path.unlink()
    return pca


def embed_images(model: FeatureModel, paths: Sequence[Path], batch_size: int = 16, runtime: Runtime | str = Runtime.AUTO) -> np.ndarray:
    """(N, dim) vectors of plain image files, in order (images of one size batch together)."""
    import torch

    from rscbir.images import load_image
    from rscbir.models.runtime import forward_for

    forward = forward_for(model, runtime)
    out = []
    for start in range(0, len(paths), batch_size):
        batch = [load_image(p) for p in paths[start : start + batch_size]]
        if len({tuple(t.shape) for t in batch}) == 1:
            out.append(forward(torch.stack(batch)).float().numpy())
        else:
            out.extend(forward(t[None]).float().numpy() for t in batch)
    return np.concatenate(out)


__all__ = ["embed_scenes", "embed_images", "embed_batches", "numpy_batches", "LocalRunner", "Runner", "PatchStream",
           "EmbeddingStore", "EmbedOptions", "DEFAULT_DIM", "STORE_VERSION"]  # the last four live in rscbir.store

"""The on-disk embedding store and the options it is written with.

A store folder holds::

    catalog.parquet   patch rows (see rscbir.catalog); row i <-> vector i
    vectors.npy       (N, dim) float16 or float32, L2-normalised
    model.json        ModelConfig + tiling + per-scene scaling: how to embed again
    pca.npz           PCA, when ``dim`` was reduced

:mod:`rscbir.embed` writes stores; reading one (and an index) needs no deep-learning framework.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from rasterio.enums import Resampling

from rscbir.catalog import read_catalog
from rscbir.defaults import DEFAULT_DIM
from rscbir.errors import StoreError
from rscbir.models.config import ModelConfig
from rscbir.models.whitening import PCAWhitening
from rscbir.modes import Device, Runtime, VectorDtype
from rscbir.tiling import TilingConfig

STORE_VERSION = 1


@dataclass(frozen=True)
class EmbedOptions:
    """How to run inference and store the vectors."""

    batch_size: int = 8  # as fast as 16 on 2 cores with the cached graph, and 593 MiB peak for 10 NAIP tiles, not 832
    workers: int | None = None  # reader processes; None: 0 on <= 2 cores (they only steal CPU there), else 2
    runtime: Runtime = Runtime.AUTO
    dtype: VectorDtype = VectorDtype.FLOAT16
    dim: int | None = DEFAULT_DIM  # centred PCA to this many dimensions (None: keep the model's)
    whiten: float = 0.0  # whitening power: 0 centred PCA, 0.5 full whitening
    resampling: Resampling = Resampling.bilinear
    progress: bool | str = False  # "bar", "lines" or "off" (rscbir.progress); True: as stderr suits
    device: Device = Device.AUTO

    def __post_init__(self) -> None:
        for name, kind in (("runtime", Runtime), ("dtype", VectorDtype), ("device", Device)):
            object.__setattr__(self, name, kind(getattr(self, name)))

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(self.dtype.value)


@dataclass
class EmbeddingStore:
    """An embedding store folder, opened read-only. The vectors are memory-mapped and the catalog is read on first
    use: a driver that only hands a store's rows to Dask workers never holds its catalog."""

    path: Path
    meta: dict
    vectors: np.ndarray  # memory-mapped

    @classmethod
    def open(cls, path: str | os.PathLike) -> "EmbeddingStore":
        """Open a store; raises :class:`StoreError` when it is incomplete or inconsistent."""
        path = Path(path)
        try:
            meta = json.loads((path / "model.json").read_text())
            rows = pq.ParquetFile(path / "catalog.parquet").metadata.num_rows  # the footer only
            vectors = np.load(path / "vectors.npy", mmap_mode="r")
        except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
            raise StoreError(f"{path}: not a readable embedding store ({exc}); re-run `rscbir embed`") from None
        if rows != len(vectors):
            raise StoreError(f"{path}: catalog has {rows} rows but {len(vectors)} vectors; re-run `rscbir embed`")
        return cls(path, meta, vectors)

    @functools.cached_property
    def catalog(self) -> gpd.GeoDataFrame:
        """Every patch row (GeoParquet, EPSG:4326), read when first asked for."""
        try:
            return read_catalog(self.path / "catalog.parquet")
        except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
            raise StoreError(f"{self.path}: catalog unreadable ({exc}); re-run `rscbir embed`") from None

    def columns(self, *names: str) -> pd.DataFrame:
        """Some columns of the catalog (no geometry decoded): the whole catalog is not read for them."""
        if "catalog" in self.__dict__:
            return self.catalog[list(names)]
        try:
            return pd.read_parquet(self.path / "catalog.parquet", columns=list(names))
        except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
            raise StoreError(f"{self.path}: catalog unreadable ({exc}); re-run `rscbir embed`") from None

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.meta["model"])

    @property
    def tiling(self) -> TilingConfig:
        return TilingConfig.from_dict(self.meta["tiling"])

    @property
    def pca(self) -> PCAWhitening | None:
        return PCAWhitening.load(self.path / "pca.npz") if self.meta.get("pca_dim") else None


__all__ = ["EmbedOptions", "EmbeddingStore", "DEFAULT_DIM", "STORE_VERSION"]

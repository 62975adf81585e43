"""Change scores of every co-located patch pair of two dates (and per-pixel score maps): CNN, CVA and their fusion."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import geopandas as gpd
import numpy as np

from rscbir.catalog import records_to_frame
from rscbir.change.pairs import indexed_pair, paired_patches
from rscbir.change.radiometry import invariant_regression, matched_scale, moment_match
from rscbir.errors import BandError
from rscbir.grid import Grid
from rscbir.models.options import ModelOptions
from rscbir.modes import ChangeMethod, Runtime
from rscbir.presets import Preset, same_bands
from rscbir.scene import Scene
from rscbir.thresholds import robust_spread
from rscbir.tiling import EdgePolicy, PatchRecord, TilingConfig, aligned_grid

if TYPE_CHECKING:
    from rscbir.index.reader import Index
    from rscbir.models.features import FeatureModel


# Patch pairs per CNN batch: 4 runs as fast as 16 in ONNX Runtime here (2k x 2k NAIP pair: 32 s against 35 s) and holds a quarter of the
# feature maps of every stage (peak 1.25 instead of 1.73 GiB)
PAIR_BATCH = 4


@dataclass
class ChangeScores:
    """Per-patch change scores of a pair of dates on one grid."""

    patches: gpd.GeoDataFrame  # row, col, geometry (EPSG:4326) + one column per score
    grid: Grid
    tiling: TilingConfig
    before: Scene
    after: Scene
    pixels: dict | None = None  # method -> (H, W) float32 score map on ``grid`` (NaN outside patches)

    def score(self, method: ChangeMethod | str) -> np.ndarray:
        return self.patches[ChangeMethod(method).value].to_numpy()


def score_change(
    before: Scene,
    after: Scene,
    model: FeatureModel | None,
    tiling: TilingConfig = TilingConfig(32),
    grid: Grid | None = None,
    spectral: tuple[Scene, Scene] | None = None,
    batch: int = PAIR_BATCH,
    pixel_maps: bool = False,
    runtime: Runtime | str = Runtime.AUTO,
) -> ChangeScores:
    """Score every co-located patch pair of two dates with every method.

    ``model`` reads ``before``/``after`` (already cut to its bands); CVA reads
    the ``spectral`` pair when given (e.g. all 13 Sentinel-2 bands of each
    date), else the same bands. Without a model only ``cva`` is computed.
    With ``pixel_maps`` the result also holds per-pixel score maps on the grid
    (``dense``, ``cva`` and ``fusion``; overlapping patches are averaged).
    """
    check_same_bands(before, after)
    grid = grid or aligned_grid([before, after])
    if pixel_maps:
        tiling = pixel_tiling(tiling)
    maps = {name: PixelMosaic(grid) for name in ("cva", "dense")} if pixel_maps else {}
    frame = score_patches(before, after, model, tiling, grid, spectral, batch, maps, runtime)
    pixels = {name: mosaic.result() for name, mosaic in maps.items()}
    if "dense" in pixels and model is not None:
        pixels["fusion"] = (robust_z(pixels["dense"]) + robust_z(pixels["cva"])) / 2
    if model is None:
        pixels.pop("dense", None)
    return ChangeScores(frame, grid, tiling, before, after, pixels)


def check_same_bands(before: Scene, after: Scene) -> None:
    """Refuse two dates whose bands differ: a CNN or CVA would compare unlike with unlike."""
    if before.count != after.count or before.band_names != after.band_names:
        raise BandError(
            f"the two dates have different bands ({', '.join(before.band_names)} vs {', '.join(after.band_names)}); "
            "pass --bands or --preset so both read the same bands"
        )


def pixel_tiling(tiling: TilingConfig) -> TilingConfig:
    """The tiling a pixel map is made with: it covers the image, so edge patches move inward instead of dropping."""
    return dataclasses.replace(tiling, edge=EdgePolicy.FIT) if tiling.edge is EdgePolicy.DROP else tiling


@dataclass(frozen=True)
class PairRadiometry:
    """What light, haze and season do to a whole pair, measured once on the pair (so that parts of it scored apart,
    by Dask workers, are scored alike): CVA's invariant regression per spectral band, and the CNN's moment match
    of the model's bands (None without a model)."""

    cva_gain: np.ndarray
    cva_offset: np.ndarray
    cva_spread: np.ndarray
    match: tuple[np.ndarray, np.ndarray] | None = None

    def to_dict(self) -> dict:
        doc = {k: np.asarray(getattr(self, k)).tolist() for k in ("cva_gain", "cva_offset", "cva_spread")}
        doc["match"] = [np.asarray(m).tolist() for m in self.match] if self.match is not None else None
        return doc

    @classmethod
    def from_dict(cls, doc: dict) -> "PairRadiometry":
        match = tuple(np.asarray(m, np.float64) for m in doc["match"]) if doc.get("match") is not None else None
        return cls(*(np.asarray(doc[k], np.float64) for k in ("cva_gain", "cva_offset", "cva_spread")), match)  # type: ignore[arg-type]


def pair_radiometry(before: Scene, after: Scene, tiling: TilingConfig, grid: Grid, spectral: tuple[Scene, Scene] | None = None,
                    with_model: bool = True) -> PairRadiometry:  # fmt: skip
    """Measure :class:`PairRadiometry` of a pair (``spectral``: the scenes CVA reads, else the model's)."""
    spectral_before, spectral_after = spectral or (before, after)
    gain, offset, spread = invariant_regression(spectral_before, spectral_after, tiling, grid)
    return PairRadiometry(gain, offset, spread, moment_match(before, after, tiling, grid) if with_model else None)


@dataclass
class RowScores:
    """The scores of some patch rows of a pair: the records scored (row-major), CVA per (row, col), CNN columns."""

    records: list
    cva: dict
    cnn: dict


def score_rows(before: Scene, after: Scene, model: FeatureModel | None, tiling: TilingConfig, grid: Grid,
               radiometry: PairRadiometry, spectral: tuple[Scene, Scene] | None = None, batch: int = PAIR_BATCH,
               mosaics: dict | None = None, runtime: Runtime | str = Runtime.AUTO, rows: Sequence[int] | None = None,
               cnn_distances=None) -> RowScores:  # fmt: skip
    """Score the co-located patch pairs of patch ``rows`` (all when None), row-major; per-pixel ``cva`` and ``dense``
    scores go to ``mosaics`` (name -> an object with ``add(records, values)``) when given."""
    mosaics = mosaics or {}
    spectral_before, spectral_after = spectral or (before, after)
    gain, offset, spread = (v[None, :, None, None] for v in (radiometry.cva_gain, radiometry.cva_offset, radiometry.cva_spread))
    cva_scores = {}
    for pairs in paired_patches(spectral_before, spectral_after, tiling, grid, batch=256, rows=rows):
        residual = (pairs.after - gain * pairs.before - offset) / spread
        per_pixel = np.sqrt((residual**2).sum(axis=1))
        magnitude = per_pixel.mean(axis=(1, 2))
        cva_scores.update({(r.row, r.col): float(m) for r, m in zip(pairs.records, magnitude)})
        if "cva" in mosaics:
            mosaics["cva"].add(pairs.records, per_pixel)

    records, cnn = [], {"cosine": [], "multilayer": [], "dense": []}
    if model is not None:
        if cnn_distances is None:
            from rscbir.change.cnn import distances_for  # torch loads here, only when a CNN scores the pair

            cnn_distances = distances_for(model.eval(), "dense" in mosaics, runtime)
        scale_after = matched_scale(before, *radiometry.match)
        for pairs in paired_patches(before, after, tiling, grid, batch=batch, rows=rows):
            distances = cnn_distances(model, pairs.before, pairs.after, before.scale, scale_after, "dense" in mosaics)
            records += pairs.records
            if "dense" in mosaics:
                mosaics["dense"].add(pairs.records, distances.pop("dense_map"))
            for name, values in distances.items():
                cnn[name] += values.tolist()
    else:
        for pairs in paired_patches(before, after, tiling, grid, batch=256, rows=rows):
            records += pairs.records
    return RowScores(records, cva_scores, cnn)


def patch_frame(parts: Sequence[RowScores], grid: Grid, before: Scene, after: Scene, with_model: bool) -> gpd.GeoDataFrame:
    """The per-patch table of scored rows (in row order): one row per patch, a column per method, both dates."""
    records = [r for part in parts for r in part.records]
    cva_scores = {k: v for part in parts for k, v in part.cva.items()}
    frame = records_to_frame(records, grid.crs)
    frame["cva"] = [cva_scores.get((r.row, r.col), np.nan) for r in records]
    if with_model:
        for name in ("cosine", "multilayer", "dense"):
            frame[name] = [v for part in parts for v in part.cnn[name]]
        frame["fusion"] = (robust_z(frame["dense"]) + robust_z(frame["cva"])) / 2
    frame["date_before"] = before.date.isoformat() if before.date else None
    frame["date_after"] = after.date.isoformat() if after.date else None
    return frame


def score_patches(before: Scene, after: Scene, model: FeatureModel | None, tiling: TilingConfig, grid: Grid,
                  spectral: tuple[Scene, Scene] | None = None, batch: int = PAIR_BATCH, mosaics: dict | None = None,
                  runtime: Runtime | str = Runtime.AUTO, cnn_distances=None) -> gpd.GeoDataFrame:  # fmt: skip
    """Every co-located patch pair scored (one row each, every method); per-pixel ``cva`` and ``dense`` scores go
    to ``mosaics`` (name -> an object with ``add(records, values)``) when given. Patches come in row-major order.
    The CNN runs on ``runtime`` (ONNX Runtime by default on the CPU, :func:`rscbir.change.cnn.distances_for`), or
    through ``cnn_distances`` when given (e.g. a cached graph, :class:`rscbir.models.onnx_cache.CachedPairDistances`)."""
    radiometry = pair_radiometry(before, after, tiling, grid, spectral, model is not None)
    part = score_rows(before, after, model, tiling, grid, radiometry, spectral, batch, mosaics, runtime, cnn_distances=cnn_distances)
    return patch_frame([part], grid, before, after, model is not None)


class PixelMosaic:
    """Per-pixel scores of many patches on one grid (``channels`` of them per pixel when given); overlaps are averaged."""

    def __init__(self, grid: Grid, channels: int | None = None) -> None:
        self.total = np.zeros(grid.shape if channels is None else (channels, *grid.shape), np.float32)
        self.count = np.zeros(grid.shape, np.uint16)

    def add(self, records: Sequence[PatchRecord], values: np.ndarray) -> None:
        height, width = self.count.shape
        for record, value in zip(records, values):
            r, c = int(record.window.row_off), int(record.window.col_off)
            h, w = min(value.shape[-2], height - r), min(value.shape[-1], width - c)
            self.total[..., r : r + h, c : c + w] += value[..., :h, :w]
            self.count[r : r + h, c : c + w] += 1

    def result(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.total / self.count, np.nan).astype(np.float32)


class RollingMosaic:
    """:class:`PixelMosaic` for patches that arrive in row-major order, holding only a patch height of rows: rows no
    later patch can reach are averaged and handed to ``sink(first_row, rows)`` (float32, NaN where no patch lies),
    so a score map of any size streams to disk. The rows equal those :meth:`PixelMosaic.result` gives."""

    def __init__(self, grid: Grid, rows: int, sink) -> None:
        self.height, self.width, self.sink = grid.height, grid.width, sink
        self.start = 0  # grid row of the buffer's first row
        self.total = np.zeros((rows, grid.width), np.float32)
        self.count = np.zeros((rows, grid.width), np.uint16)

    def add(self, records: Sequence[PatchRecord], values: np.ndarray) -> None:
        for record, value in zip(records, values):
            r, c = int(record.window.row_off), int(record.window.col_off)
            self.flush(r)
            h, w = min(value.shape[-2], self.height - r), min(value.shape[-1], self.width - c)
            if r + h > self.start + len(self.total):
                raise ValueError(f"a patch of {h} rows does not fit a rolling mosaic of {len(self.total)} rows")
            top = r - self.start
            self.total[top : top + h, c : c + w] += value[:h, :w]
            self.count[top : top + h, c : c + w] += 1

    def flush(self, row: int) -> None:
        """Hand every row above grid row ``row`` to the sink (patches arrive row-major: none will reach them again)."""
        while self.start < min(row, self.height):
            n = min(len(self.total), row - self.start, self.height - self.start)
            with np.errstate(invalid="ignore", divide="ignore"):
                rows = np.where(self.count[:n] > 0, self.total[:n] / self.count[:n], np.nan).astype(np.float32)
            self.sink(self.start, rows)
            self.total[:-n], self.count[:-n] = self.total[n:].copy(), self.count[n:].copy()
            self.total[-n:], self.count[-n:] = 0, 0
            self.start += n

    def close(self) -> None:
        """Hand every remaining row to the sink."""
        self.flush(self.height)


def robust_z(values, spread: tuple[float, float] | None = None) -> np.ndarray:
    """(x - median) / (1.4826 MAD): a z-score that outliers (the changes) do not inflate. ``spread`` gives
    (median, 1.4826 MAD) measured elsewhere (on a sample of a map too large to hold), else they are the values' own."""
    values = np.asarray(values, dtype=np.float64)
    median, mad = robust_spread(values) if spread is None else spread
    # below 1e-6 the spread is float noise, not evidence: keep the original units rather than blow it up
    return (values - median) / (mad if mad > 1e-6 else 1.0)


def score_scenes(
    before: Scene,
    after: Scene,
    tiling: TilingConfig = TilingConfig(32),
    method: ChangeMethod | str = ChangeMethod.FUSION,
    model_options: ModelOptions = ModelOptions(),
    preset: Preset | None = None,
    named_bands: bool = False,
    pixel_maps: bool = False,
) -> ChangeScores:
    """Change scores of two opened scenes: the model reads its bands, CVA reads every band both share.

    ``named_bands`` says the bands were named by a preset or ``--bands``, so dates
    with different band counts can be matched by name.
    """
    after = same_bands(after, before, named_bands)
    model, (model_before, model_after) = None, (before, after)
    if ChangeMethod(method) is not ChangeMethod.CVA:
        from rscbir.models.load import model_for_scenes  # torch loads here, only when a CNN scores the pair

        model, (model_before, model_after) = model_for_scenes([before, after], preset, model_options)
    return score_change(model_before, model_after, model, tiling, spectral=(before, after), pixel_maps=pixel_maps,
                        runtime=model_options.runtime)


def scores_from_index(index: Index, dates: Sequence[str], method: ChangeMethod | str = ChangeMethod.FUSION) -> ChangeScores:
    """Change scores between two dates of an aligned index; ``cosine`` reuses the stored vectors."""
    grid, tiling = index.grid, index.tiling
    if ChangeMethod(method) is ChangeMethod.COSINE:  # the stored vectors: no raster read, no CNN, no torch
        pair = indexed_pair(index, dates)
        frame = pair.rows_before
        frame["cosine"] = pair.distance
        frame["date_before"], frame["date_after"] = pair.before.date, pair.after.date
        return ChangeScores(frame, grid, tiling, Scene.from_dict(pair.before.doc), Scene.from_dict(pair.after.doc))
    from rscbir.models.load import model_from_config

    before, after = (Scene.from_dict(record.doc) for record in index.scenes_on(dates))
    return score_change(before, after, model_from_config(index.model_config), tiling, grid)


__all__ = ["ChangeScores", "PairRadiometry", "PixelMosaic", "RollingMosaic", "RowScores", "check_same_bands", "pair_radiometry",
           "patch_frame", "pixel_tiling", "robust_z", "score_change", "score_patches", "score_rows", "score_scenes", "scores_from_index"]

"""Change scores of every co-located patch pair of two dates (and per-pixel score maps): CNN, CVA and their fusion."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import geopandas as gpd
import numpy as np

from rscbir.catalog import records_to_frame
from rscbir.change.pairs import indexed_pair, paired_patches
from rscbir.change.radiometry import invariant_regression, radiometric_match
from rscbir.errors import BandError
from rscbir.grid import Grid
from rscbir.models.options import ModelOptions
from rscbir.modes import ChangeMethod
from rscbir.presets import Preset, same_bands
from rscbir.scene import Scene
from rscbir.thresholds import robust_spread
from rscbir.tiling import EdgePolicy, PatchRecord, TilingConfig, aligned_grid

if TYPE_CHECKING:
    from rscbir.index.reader import Index
    from rscbir.models.features import FeatureModel


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
    batch: int = 16,
    pixel_maps: bool = False,
) -> ChangeScores:
    """Score every co-located patch pair of two dates with every method.

    ``model`` reads ``before``/``after`` (already cut to its bands); CVA reads
    the ``spectral`` pair when given (e.g. all 13 Sentinel-2 bands of each
    date), else the same bands. Without a model only ``cva`` is computed.
    With ``pixel_maps`` the result also holds per-pixel score maps on the grid
    (``dense``, ``cva`` and ``fusion``; overlapping patches are averaged).
    """
    if before.count != after.count or before.band_names != after.band_names:
        raise BandError(
            f"the two dates have different bands ({', '.join(before.band_names)} vs {', '.join(after.band_names)}); "
            "pass --bands or --preset so both read the same bands"
        )
    grid = grid or aligned_grid([before, after])
    if pixel_maps and tiling.edge is EdgePolicy.DROP:  # a pixel map covers the image: edge patches move inward
        tiling = dataclasses.replace(tiling, edge=EdgePolicy.FIT)
    spectral_before, spectral_after = spectral or (before, after)
    gain, offset, spread = invariant_regression(spectral_before, spectral_after, tiling, grid)
    cva_scores = {}
    maps = {name: PixelMosaic(grid) for name in ("cva", "dense")} if pixel_maps else {}
    for pairs in paired_patches(spectral_before, spectral_after, tiling, grid, batch=256):
        residual = (pairs.after - gain[None, :, None, None] * pairs.before - offset[None, :, None, None]) / spread[None, :, None, None]
        per_pixel = np.sqrt((residual**2).sum(axis=1))
        magnitude = per_pixel.mean(axis=(1, 2))
        cva_scores.update({(r.row, r.col): float(m) for r, m in zip(pairs.records, magnitude)})
        if pixel_maps:
            maps["cva"].add(pairs.records, per_pixel)

    records, cnn = [], {"cosine": [], "multilayer": [], "dense": []}
    if model is not None:
        model.eval()
        from rscbir.change.cnn import cnn_distances  # torch loads here, only when a CNN scores the pair

        scale_after = radiometric_match(before, after, tiling, grid)
        for pairs in paired_patches(before, after, tiling, grid, batch=batch):
            distances = cnn_distances(model, pairs.before, pairs.after, before.scale, scale_after, pixel_maps)
            records += pairs.records
            if pixel_maps:
                maps["dense"].add(pairs.records, distances.pop("dense_map"))
            for name, values in distances.items():
                cnn[name] += values.tolist()
    else:
        for pairs in paired_patches(before, after, tiling, grid, batch=256):
            records += pairs.records
    frame = records_to_frame(records, grid.crs)
    frame["cva"] = [cva_scores.get((r.row, r.col), np.nan) for r in records]
    if model is not None:
        for name, values in cnn.items():
            frame[name] = values
        frame["fusion"] = (robust_z(frame["dense"]) + robust_z(frame["cva"])) / 2
    frame["date_before"] = before.date.isoformat() if before.date else None
    frame["date_after"] = after.date.isoformat() if after.date else None
    pixels = {name: mosaic.result() for name, mosaic in maps.items()}
    if "dense" in pixels and model is not None:
        pixels["fusion"] = (robust_z(pixels["dense"]) + robust_z(pixels["cva"])) / 2
    if model is None:
        pixels.pop("dense", None)
    return ChangeScores(frame, grid, tiling, before, after, pixels)


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


def robust_z(values) -> np.ndarray:
    """(x - median) / (1.4826 MAD): a z-score that outliers (the changes) do not inflate."""
    values = np.asarray(values, dtype=np.float64)
    median, mad = robust_spread(values)
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
    return score_change(model_before, model_after, model, tiling, spectral=(before, after), pixel_maps=pixel_maps)


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


__all__ = ["ChangeScores", "PixelMosaic", "robust_z", "score_change", "score_scenes", "scores_from_index"]

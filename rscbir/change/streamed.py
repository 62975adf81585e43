"""Pixel change maps made in strips of rows: memory holds a strip, never the scene, so the peak stays flat at
any scene size (a Sentinel-2 tile, a NAIP quarter-quad, a mosaic of them).

:func:`stream_change` gives what :func:`rscbir.change.detect` gives at pixel level, in three passes over the grid:

1. **score**: co-located patches are scored in row-major order (:func:`score_patches`); per-pixel ``cva`` and
   ``dense`` scores go through a :class:`RollingMosaic` into scratch GeoTIFFs, and every k-th pixel of every k-th
   row into a sample;
2. **fuse and smooth**: fusion takes its robust centres and spreads from the sample; the score map goes to the
   ``--scores`` COG; the Gaussian smoothing runs on strips read with a margin of rows, so strips join without
   seams; the cut comes from the sample of smoothed scores;
3. **trace**: each strip's mask is labelled; an area inside a strip is finished there, and areas that reach a
   strip's edge are joined to their other parts across it (union-find) and finished at the end.

Up to :data:`SAMPLE_PIXELS` the sample holds every pixel, and the areas equal those of the map made whole (to
float rounding of the means); above, centres, spreads and the cut are estimated from a regular sample of that size.
Scratch rasters live in a temporary folder (``TMPDIR``), about 12 bytes per pixel, removed at the end.
"""

from __future__ import annotations

import math
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
import shapely.affinity
import shapely.geometry
from affine import Affine
from rasterio import features
from rasterio.windows import Window
from scipy import ndimage

from rscbir.catalog import geodesic_areas
from rscbir.change.areas import AREA_PERCENTILE, AREA_SCORE, PixelRegularisation, smooth_scores, smoothing_margin
from rscbir.change.detection import PIXEL_THRESHOLD, ChangeMap
from rscbir.change.scores import ChangeScores, RollingMosaic, check_same_bands, pixel_tiling, robust_z, score_patches
from rscbir.errors import BandError
from rscbir.grid import Grid
from rscbir.models.options import ModelOptions
from rscbir.modes import ChangeMethod
from rscbir.presets import Preset, same_bands
from rscbir.scene import Scene
from rscbir.thresholds import Threshold, robust_spread
from rscbir.tiling import TilingConfig, aligned_grid

SAMPLE_PIXELS = 4_000_000  # pixels kept to measure centres, spreads and the cut: every pixel of a grid up to this
STRIP_PIXELS = 4_000_000  # pixels per strip of rows in passes 2 and 3
GDAL_CACHE_MB = 128  # GDAL's block cache while streaming (its default, 5 % of RAM, would grow with the scene)
PIXEL_METHODS = (ChangeMethod.FUSION, ChangeMethod.DENSE, ChangeMethod.CVA)
AREA_COLUMNS = ["score", "max_score", "mean_score", "area_m2", "pixels", "date_before", "date_after"]


@dataclass
class PixelView:
    """The score map and the changed mask at the pixels a preview shows (every ``factor``-th row and column)."""

    rows: np.ndarray
    cols: np.ndarray
    scores: np.ndarray
    mask: np.ndarray


def stream_change(before: Scene, after: Scene, method: ChangeMethod | str = ChangeMethod.FUSION, *,
                  threshold: Threshold | str | float | None = None, tiling: TilingConfig = TilingConfig(32),
                  model_options: ModelOptions = ModelOptions(), preset: Preset | None = None, named_bands: bool = False,
                  rule: PixelRegularisation = PixelRegularisation(), scores_path=None, strip_rows: int | None = None,
                  sample_pixels: int = SAMPLE_PIXELS, preview_side: int = 800, client=None) -> ChangeMap:  # fmt: skip
    """What changed between two opened scenes, pixel by pixel, in bounded memory (see the module docstring).
    With a Dask ``client`` the patch rows are scored by its workers (:mod:`rscbir.change.distributed`), with the
    same result.

    The result is a :class:`ChangeMap` without in-memory pixel maps: ``view`` holds what a preview shows, and the
    score map, when ``scores_path`` is given, is written there as a COG (through :func:`atomic_path`, so an
    enclosing :func:`rscbir.atomic.all_or_nothing` keeps it with the other outputs).
    """
    method = ChangeMethod(method)
    if method not in PIXEL_METHODS:
        raise BandError(f"no per-pixel {method.value} scores: pixel maps exist for {', '.join(m.value for m in PIXEL_METHODS)}")
    cut_rule = Threshold.parse(threshold) if threshold is not None else PIXEL_THRESHOLD
    tiling = pixel_tiling(tiling)
    after = same_bands(after, before, named_bands)
    model, (model_before, model_after), distances = None, (before, after), None
    if method is not ChangeMethod.CVA:  # the cached pair graph (no torch), or the torch model that makes it
        from rscbir.models.onnx_cache import pair_model_for

        model, (model_before, model_after), distances = pair_model_for([before, after], preset, model_options,
                                                                       lambda scenes: tiling.pixels(aligned_grid(scenes))[0])  # fmt: skip
    check_same_bands(model_before, model_after)
    grid = aligned_grid([model_before, model_after])
    rows = strip_rows or max(1, STRIP_PIXELS // grid.width)
    with tempfile.TemporaryDirectory(prefix="rscbir-change-") as scratch, rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        from rscbir.export import preview_pixels

        run = _Run(grid, Path(scratch), rows, sample_pixels, preview_pixels(grid, preview_side)[1:])
        frame = run.score(model_before, model_after, model, tiling, (before, after), model_options.runtime, client, distances)
        cut = run.fuse_and_smooth(method, rule.smooth, cut_rule, frame, scores_path)
        areas = run.trace(cut, rule.min_pixels, frame)
    scores = ChangeScores(frame, grid, tiling, model_before, model_after)
    summary = {"method": method.value, "level": "pixel", "threshold_rule": str(cut_rule), "threshold": cut, "pixels": run.valid_pixels,
               "changed_pixels": int(areas["pixels"].sum()) if len(areas) else 0, "smooth_px": rule.smooth,
               "min_pixels": rule.min_pixels, "area_score": AREA_SCORE}  # fmt: skip
    return ChangeMap(scores, areas, summary, view=run.view)


class PixelSample:
    """Every ``step``-th pixel of every ``step``-th row of a map that arrives in strips of rows, in grid order."""

    def __init__(self, grid: Grid, cap: int) -> None:
        self.step = max(1, math.ceil(math.sqrt(grid.width * grid.height / cap)))
        self.parts: dict[int, np.ndarray] = {}

    def add(self, first_row: int, rows: np.ndarray) -> None:
        self.parts[first_row] = rows[(-first_row) % self.step :: self.step, :: self.step].ravel()

    def values(self) -> np.ndarray:
        return np.concatenate([self.parts[k] for k in sorted(self.parts)]) if self.parts else np.zeros(0, np.float32)


@dataclass
class _Area:
    """The part of a changed area seen so far: its pixel count, score sum and maximum, scores and outline pieces
    (an area finished within its strip keeps its robust score instead of its scores)."""

    pixels: int
    total: float
    maximum: float
    values: list = field(default_factory=list)
    pieces: list = field(default_factory=list)
    robust: float | None = None

    def score(self) -> float:
        if self.robust is None:
            self.robust = float(np.percentile(np.concatenate(self.values), AREA_PERCENTILE))
            self.values = []
        return self.robust

    def join(self, other: "_Area") -> None:
        self.pixels += other.pixels
        self.total += other.total
        self.maximum = max(self.maximum, other.maximum)
        self.values += other.values
        self.pieces += other.pieces


class _Run:
    """One streamed change map: the scratch rasters, samples and counts its three passes share."""

    def __init__(self, grid: Grid, scratch: Path, strip_rows: int, sample_pixels: int, preview: tuple[np.ndarray, np.ndarray]) -> None:
        self.grid, self.scratch, self.strip_rows, self.sample_pixels = grid, scratch, strip_rows, sample_pixels
        self.view_rows, self.view_cols = preview
        self.view = PixelView(self.view_rows, self.view_cols, np.full((len(self.view_rows), len(self.view_cols)), np.nan),
                              np.zeros((len(self.view_rows), len(self.view_cols)), bool))  # fmt: skip
        self.samples: dict[str, PixelSample] = {}
        self.valid_pixels = 0

    # ---------------------------------------------------------------- pass 1
    def score(self, before: Scene, after: Scene, model, tiling: TilingConfig, spectral: tuple[Scene, Scene], runtime,
              client=None, distances=None) -> gpd.GeoDataFrame:  # fmt: skip
        """Per-patch scores (returned) and per-pixel ``cva`` and ``dense`` maps (scratch rasters and samples)."""
        size, _ = tiling.pixels(self.grid)
        names = ("cva", "dense") if model is not None else ("cva",)
        with ExitStack() as stack:
            mosaics = {}
            for name in names:
                raster = stack.enter_context(self._scratch(name, "float32"))
                self.samples[name] = PixelSample(self.grid, self.sample_pixels)
                mosaics[name] = RollingMosaic(self.grid, size, self._sink(raster, self.samples[name]))
            if client is None:
                frame = score_patches(before, after, model, tiling, self.grid, spectral, mosaics=mosaics, runtime=runtime,
                                      cnn_distances=distances)  # fmt: skip
            else:
                from rscbir.change.distributed import score_patches_on

                shards = self.scratch / "shards"
                shards.mkdir()
                frame = score_patches_on(client, before, after, model, tiling, self.grid, spectral, mosaics, runtime, shards)
            for mosaic in mosaics.values():
                mosaic.close()
        return frame

    # ---------------------------------------------------------------- pass 2
    def fuse_and_smooth(self, method: ChangeMethod, sigma: float, cut_rule: Threshold, frame, scores_path) -> float:
        """The score map (to ``scores_path``), the smoothed map (scratch) and the cut from its sample."""
        fusion = method is ChangeMethod.FUSION
        if fusion:
            spreads = {n: tuple(float(v) for v in robust_spread(self.samples[n].values().astype(np.float64))) for n in ("dense", "cva")}
            raw_sample = (robust_z(self.samples["dense"].values(), spreads["dense"]) + robust_z(self.samples["cva"].values(), spreads["cva"])) / 2
        else:
            raw_sample = self.samples[method.value].values()
        finite = raw_sample[np.isfinite(raw_sample)]
        fill = np.nanmedian(finite) if finite.size else 0.0
        margin = smoothing_margin(sigma)
        smoothed_dtype = "float32" if sigma > 0 or not fusion else "float64"
        smoothed_sample = PixelSample(self.grid, self.sample_pixels)
        inputs = ("dense", "cva") if fusion else (method.value,)
        with ExitStack() as stack:
            sources = {n: stack.enter_context(rasterio.open(self.scratch / f"{n}.tif")) for n in inputs}
            score_file = stack.enter_context(self._scratch("score", "float32", tiled=True)) if scores_path else None
            smoothed_file = stack.enter_context(self._scratch("smoothed", smoothed_dtype))
            for first, last in self._strips():
                top, bottom = max(0, first - margin), min(self.grid.height, last + margin)
                window = Window(0, top, self.grid.width, bottom - top)
                if fusion:
                    raw = (robust_z(sources["dense"].read(1, window=window), spreads["dense"])
                           + robust_z(sources["cva"].read(1, window=window), spreads["cva"])) / 2  # fmt: skip
                else:
                    raw = sources[method.value].read(1, window=window)
                core = slice(first - top, last - top)
                smoothed = smooth_scores(raw, sigma, fill)[core]
                rows = Window(0, first, self.grid.width, last - first)
                if score_file is not None:
                    score_file.write(raw[core].astype(np.float32), 1, window=rows)
                smoothed_file.write(smoothed.astype(smoothed_dtype), 1, window=rows)
                smoothed_sample.add(first, smoothed)
                self.valid_pixels += int(np.isfinite(smoothed).sum())
                self._view_rows(first, last, raw[core], self.view.scores)
        if scores_path:
            self._write_scores(method, frame, scores_path)
        return cut_rule.value(smoothed_sample.values()) if self.valid_pixels else math.inf

    # ---------------------------------------------------------------- pass 3
    def trace(self, cut: float, min_pixels: int, frame) -> gpd.GeoDataFrame:
        """Changed areas (EPSG:4326, best score first) traced strip by strip and joined across strip edges."""
        done: dict[int, _Area] = {}  # finished in their strip
        open_: dict[int, _Area] = {}  # reaching a strip edge: joined at the end
        parent: dict[int, int] = {}
        view_ids = np.zeros(self.view.mask.shape, np.int64)
        offset, above = 0, None  # first global id of the strip; the previous strip's last row of global ids
        with rasterio.open(self.scratch / "smoothed.tif") as smoothed_file:
            for first, last in self._strips():
                smoothed = smoothed_file.read(1, window=Window(0, first, self.grid.width, last - first))
                mask = np.isfinite(smoothed) & (np.nan_to_num(smoothed, nan=-np.inf) > cut)
                labels, count = ndimage.label(mask)
                ids = np.where(labels > 0, labels.astype(np.int64) + offset, 0)
                edge = set()
                if first > 0:
                    edge |= set(np.unique(labels[0][labels[0] > 0]).tolist())
                if last < self.grid.height:
                    edge |= set(np.unique(labels[-1][labels[-1] > 0]).tolist())
                sizes = np.bincount(labels.ravel(), minlength=count + 1)
                keep = np.zeros(count + 1, bool)
                keep[1:] = sizes[1:] >= min_pixels
                keep[list(edge)] = True
                keep[0] = False
                pieces: dict[int, list] = {}
                traced = keep[labels]
                if traced.any():
                    shapes = features.shapes(labels.astype(np.int32), mask=traced, transform=Affine.translation(0, first))
                    for geometry, value in shapes:
                        pieces.setdefault(int(value), []).append(shapely.geometry.shape(geometry))
                for k, where in enumerate(ndimage.find_objects(labels), start=1):
                    if where is None or not keep[k]:
                        continue
                    values = smoothed[where][labels[where] == k]
                    area = _Area(int(values.size), float(values.astype(np.float64).sum()), float(values.max()), [values], pieces.get(k, []))
                    if k in edge:
                        open_[offset + k] = area
                        parent[offset + k] = offset + k
                    else:
                        area.score()
                        done[offset + k] = area
                if above is not None:  # 4-connected across the strip edge: the same column, both changed
                    joined = (above > 0) & (ids[0] > 0)
                    for a, b in set(zip(above[joined].tolist(), ids[0][joined].tolist())):
                        _union(parent, a, b)
                above = ids[-1].copy()
                self._view_rows(first, last, ids, view_ids)
                offset += count
        roots: dict[int, _Area] = {}
        for key in sorted(open_):
            root = _find(parent, key)
            if root in roots:
                roots[root].join(open_[key])
            else:
                roots[root] = open_[key]
        kept = {key: area for key, area in roots.items() if area.pixels >= min_pixels}
        kept_ids = [key for key in open_ if _find(parent, key) in kept] + list(done)
        self.view.mask = np.isin(view_ids, np.asarray(kept_ids, np.int64)) & (view_ids > 0)
        return self._areas([*done.values(), *kept.values()], frame)

    # ---------------------------------------------------------------- helpers
    def _areas(self, areas: list[_Area], frame) -> gpd.GeoDataFrame:
        if not areas:
            return gpd.GeoDataFrame({c: [] for c in AREA_COLUMNS}, geometry=[], crs="EPSG:4326")
        t = self.grid.transform
        matrix = [t.a, t.b, t.d, t.e, t.c, t.f]
        outlines = [shapely.affinity.affine_transform(shapely.union_all(a.pieces), matrix) for a in areas]
        geographic = gpd.GeoSeries(outlines, crs=self.grid.crs).to_crs("EPSG:4326")
        robust = [a.score() for a in areas]
        out = gpd.GeoDataFrame(
            {
                "score": robust,
                "max_score": [a.maximum for a in areas],
                "mean_score": [a.total / a.pixels for a in areas],
                "area_m2": geodesic_areas(geographic),
                "pixels": [a.pixels for a in areas],
                "date_before": frame["date_before"].iloc[0] if len(frame) else None,
                "date_after": frame["date_after"].iloc[0] if len(frame) else None,
            },
            geometry=geographic.values,
            crs="EPSG:4326",
        )
        return out.sort_values("score", ascending=False, ignore_index=True)

    def _strips(self):
        for first in range(0, self.grid.height, self.strip_rows):
            yield first, min(first + self.strip_rows, self.grid.height)

    def _scratch(self, name: str, dtype: str, tiled: bool = False):
        profile = {"driver": "GTiff", "width": self.grid.width, "height": self.grid.height, "count": 1, "dtype": dtype,
                   "crs": self.grid.crs, "transform": self.grid.transform, "nodata": float("nan"), "BIGTIFF": "IF_SAFER"}  # fmt: skip
        if tiled:
            profile.update(tiled=True, blockxsize=512, blockysize=512)
        return rasterio.open(self.scratch / f"{name}.tif", "w", **profile)

    @staticmethod
    def _sink(raster, sample: PixelSample):
        def sink(first_row: int, rows: np.ndarray) -> None:
            raster.write(rows, 1, window=Window(0, first_row, rows.shape[1], rows.shape[0]))
            sample.add(first_row, rows)

        return sink

    def _view_rows(self, first: int, last: int, strip: np.ndarray, out: np.ndarray) -> None:
        """Copy the preview's pixels that fall in grid rows [first, last) of ``strip`` into ``out``."""
        inside = (self.view_rows >= first) & (self.view_rows < last)
        if inside.any():
            out[inside] = strip[self.view_rows[inside] - first][:, self.view_cols]

    def _write_scores(self, method: ChangeMethod, frame, path) -> None:
        from rscbir.export import copy_to_cog

        with rasterio.open(self.scratch / "score.tif", "r+") as staged:
            staged.set_band_description(1, f"{method.value} change score")
            staged.update_tags(method=method.value, date_before=str(frame["date_before"].iloc[0]) if len(frame) else "",
                               date_after=str(frame["date_after"].iloc[0]) if len(frame) else "")  # fmt: skip
        copy_to_cog(self.scratch / "score.tif", path)


def _find(parent: dict[int, int], key: int) -> int:
    while parent[key] != key:
        parent[key] = parent[parent[key]]
        key = parent[key]
    return key


def _union(parent: dict[int, int], a: int, b: int) -> None:
    ra, rb = _find(parent, a), _find(parent, b)
    if ra != rb:
        parent[max(ra, rb)] = min(ra, rb)


__all__ = ["PIXEL_METHODS", "PixelSample", "PixelView", "SAMPLE_PIXELS", "STRIP_PIXELS", "stream_change"]

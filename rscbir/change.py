"""What changed between two dates: per-patch change scores, thresholds, polygons, score rasters.

Both dates are read onto one common grid, so patch (row, col) is the same
ground in each. Every co-located patch pair gets a change score:

``cosine``
    1 - cosine similarity of the final CNN embeddings (ImageNet features of the
    RGB bands, average-pooled, as the index stores them).
``multilayer``
    The mean of 1 - cosine over the pooled outputs of every CNN stage, from
    the stem to the last block: early stages see colour and texture, late ones
    objects, in the spirit of Deep Change Vector Analysis (Saha et al. 2019).
``dense``
    Deep Change Vector Analysis proper: 1 - cosine between the two dates'
    feature vectors *at each location* of every stage's feature map, averaged
    over locations and stages. Unlike pooled vectors, a change covering a few
    percent of the patch is not averaged away before the comparison.
``cva``
    Classic change vector analysis: per-pixel length of the difference of the
    bands, each standardised per scene (z-score), averaged over the patch.
``fusion`` (default)
    The mean of the robust z-scores (median / MAD within the pair) of
    ``dense`` and ``cva``: CNN and spectral evidence on one scale, with no
    weight fitted to labels. Robust z-scores keep the heavy tail where rare
    change lives (percentile ranks would flatten it and mislead Otsu).

Changed patches are those above a threshold chosen without labels
(:mod:`rscbir.thresholds`); :func:`changed_areas` dissolves them into polygons.
Writers (score GeoTIFF, preview PNG, GeoJSON) live in :mod:`rscbir.export`;
"where else did the same change happen" is :func:`rscbir.query.query_change`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Iterator, Sequence

import geopandas as gpd
import numpy as np
import shapely
import shapely.geometry
import torch
import torch.nn.functional as F
from rasterio import features
from rasterio.enums import Resampling
from scipy import ndimage

from rscbir.catalog import geodesic_areas, records_to_frame
from rscbir.errors import BandError, EmptyGridError
from rscbir.grid import Grid
from rscbir.index import Index
from rscbir.models.features import FeatureModel, stage_maps
from rscbir.models.load import ModelOptions, model_from_config
from rscbir.modes import ChangeMethod
from rscbir.presets import Preset, SceneOptions, load_preset, same_bands
from rscbir.scene import Scene
from rscbir.thresholds import Threshold, robust_spread
from rscbir.tiling import EdgePolicy, PatchRecord, TilingConfig, aligned_grid, iter_patches

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- patch pairs
@dataclass
class PairBatch:
    records: list[PatchRecord]  # the before-date records (same ground as after)
    before: np.ndarray  # (n, bands, h, w) raw
    after: np.ndarray


def paired_patches(before: Scene, after: Scene, tiling: TilingConfig, grid: Grid, batch: int = 16,
                   resampling: Resampling = Resampling.bilinear) -> Iterator[PairBatch]:  # fmt: skip
    """Batches of co-located patches present (not nodata) in both dates, row-major."""
    a_iter = iter_patches(before, tiling, grid, resampling=resampling)
    b_iter = iter_patches(after, tiling, grid, resampling=resampling)
    pending: list = []
    a, b = next(a_iter, None), next(b_iter, None)
    while a is not None and b is not None:
        ka, kb = (a.record.row, a.record.col), (b.record.row, b.record.col)
        if ka == kb:
            pending.append((a, b))
            a, b = next(a_iter, None), next(b_iter, None)
        elif ka < kb:
            a = next(a_iter, None)
        else:
            b = next(b_iter, None)
        if len(pending) == batch:
            yield _batch(pending)
            pending = []
    if pending:
        yield _batch(pending)


def _batch(pairs) -> PairBatch:
    return PairBatch([p.record for p, _ in pairs], np.stack([p.data for p, _ in pairs]), np.stack([q.data for _, q in pairs]))


def band_moments(scene: Scene, tiling: TilingConfig, grid: Grid, sample: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Per-band robust centre and spread (median, 1.4826 MAD) of the scene's valid pixels on ``grid``.

    Streamed patch by patch on every ``sample``-th row and column. Robust, so the changes themselves (a new
    district is a few percent of the pixels) do not move the normalisation that is meant to remove what the
    whole scene shares.
    """
    parts = []
    for patch in iter_patches(scene, tiling, grid):
        parts.append(patch.data[:, ::sample, ::sample].reshape(patch.data.shape[0], -1).astype(np.float32))
    if not parts:
        raise EmptyGridError(f"{scene.scene_id}: no valid patch on the common grid; check nodata and the dates' overlap")
    values = np.concatenate(parts, axis=1)
    centre, spread = robust_spread(values, axis=1)
    flat = spread < 1e-6
    spread[flat] = np.maximum(values[flat].std(axis=1), 1e-6)  # a band that is mostly one value: fall back to std
    return centre.astype(np.float64), spread.astype(np.float64)


def invariant_regression(before: Scene, after: Scene, tiling: TilingConfig, grid: Grid, sample: int = 4,
                         rounds: int = 2, keep: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Relative radiometric normalisation by regression on invariant pixels: per band, after = gain * before
    + offset fitted on co-located pixels, refitted ``rounds`` times on the ``keep`` share with the smallest
    change; returns (gain, offset, robust spread of the residual). Light, haze and season that act on the whole
    scene fall into gain and offset; what is left is change (the idea of IR-MAD, with one band at a time)."""
    pairs = [(p.before[:, :, ::sample, ::sample], p.after[:, :, ::sample, ::sample]) for p in paired_patches(before, after, tiling, grid, batch=256)]
    if not pairs:
        raise EmptyGridError(f"{before.scene_id} and {after.scene_id}: no valid patch pair on the common grid")
    x = np.concatenate([b.transpose(1, 0, 2, 3).reshape(b.shape[1], -1) for b, _ in pairs], axis=1).astype(np.float64)
    y = np.concatenate([a.transpose(1, 0, 2, 3).reshape(a.shape[1], -1) for _, a in pairs], axis=1).astype(np.float64)
    invariant = np.ones(x.shape[1], bool)
    for round_ in range(rounds + 1):
        gain, offset = np.ones(len(x)), np.zeros(len(x))
        for band in range(len(x)):
            xs, ys = x[band, invariant], y[band, invariant]
            var = xs.var()
            gain[band] = ((xs - xs.mean()) * (ys - ys.mean())).mean() / var if var > 1e-12 else 1.0
            offset[band] = ys.mean() - gain[band] * xs.mean()
        residual = y - gain[:, None] * x - offset[:, None]
        centre, spread = robust_spread(residual[:, invariant], axis=1)
        spread = np.maximum(spread, 1e-6)
        if round_ < rounds:
            magnitude = np.sqrt((((residual - centre[:, None]) / spread[:, None]) ** 2).sum(axis=0))
            invariant = magnitude <= np.quantile(magnitude, keep)
    return gain, offset + centre, spread


# ---------------------------------------------------------------- CNN stages
def cnn_distances(model: FeatureModel, before: np.ndarray, after: np.ndarray, scale_before, scale_after,
                  pixel_maps: bool = False) -> dict[str, np.ndarray]:  # fmt: skip
    """Per patch pair: final-stage pooled cosine distance (``cosine``), its mean over stages
    (``multilayer``) and the per-location distance averaged over locations and stages (``dense``).

    With ``pixel_maps`` also ``dense_map``: (n, h, w) per-location distances of every stage
    resized to the patch's pixels and averaged, a score at sub-patch resolution."""
    xb = torch.from_numpy(scale_before(before))
    xa = torch.from_numpy(scale_after(after))
    with torch.inference_mode():
        mb, ma = stage_maps(model, xb), stage_maps(model, xa)
        pooled = torch.stack([1 - F.cosine_similarity(b.mean(dim=(2, 3)), a.mean(dim=(2, 3)), dim=1) for b, a in zip(mb, ma)], dim=1)
        located = [1 - F.cosine_similarity(b, a, dim=1, eps=1e-6) for b, a in zip(mb, ma)]
        dense = torch.stack([d.mean(dim=(1, 2)) for d in located], dim=1)
        out = {"cosine": pooled[:, -1].numpy(), "multilayer": pooled.mean(dim=1).numpy(), "dense": dense.mean(dim=1).numpy()}
        if pixel_maps:
            size = before.shape[-2:]
            resized = [F.interpolate(d[:, None], size=size, mode="bilinear", align_corners=False)[:, 0] for d in located]
            out["dense_map"] = torch.stack(resized).mean(dim=0).numpy()
    return out


# -------------------------------------------------------------------- scoring
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
        scale_after = _radiometric_match(before, after, tiling, grid)
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


def _radiometric_match(before: Scene, after: Scene, tiling: TilingConfig, grid: Grid):
    """Relative radiometric normalisation before the CNN: the after date's bands are mapped linearly onto the
    before date's mean and spread, then scaled as the before date is. A change of light or season over the
    whole scene then reaches the CNN as no change (CVA gets the same invariance from per-scene z-scores)."""
    mb, sb = band_moments(before, tiling, grid)
    ma, sa = band_moments(after, tiling, grid)
    gain, offset = (sb / sa)[:, None, None], (mb - ma * sb / sa)[:, None, None]

    def scale(data: np.ndarray) -> np.ndarray:
        matched = data.astype(np.float32) * gain.astype(np.float32) + offset.astype(np.float32)
        return before.scale(matched)

    return scale


class PixelMosaic:
    """Per-pixel scores of many patches on one grid; overlaps are averaged."""

    def __init__(self, grid: Grid) -> None:
        self.total = np.zeros(grid.shape, np.float32)
        self.count = np.zeros(grid.shape, np.uint16)

    def add(self, records: Sequence[PatchRecord], values: np.ndarray) -> None:
        for record, value in zip(records, values):
            r, c = int(record.window.row_off), int(record.window.col_off)
            h = min(value.shape[0], self.total.shape[0] - r)
            w = min(value.shape[1], self.total.shape[1] - c)
            self.total[r : r + h, c : c + w] += value[:h, :w]
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


# ------------------------------------------------------------------- outputs


def changed_areas(scores: ChangeScores, method: ChangeMethod | str, threshold: float) -> gpd.GeoDataFrame:
    """Adjacent changed patches dissolved into polygons (EPSG:4326) with their score (p75 of the member
    patches), max/mean score, area in m², patch count and both dates; best score first."""
    method = ChangeMethod(method).value
    patches = scores.patches
    changed = patches[patches[method] > threshold]
    columns = ["score", "max_score", "mean_score", "area_m2", "patches", "date_before", "date_after", "geometry"]
    if changed.empty:
        return gpd.GeoDataFrame({c: [] for c in columns[:-1]}, geometry=[], crs="EPSG:4326")
    boxes = np.asarray(shapely.box(*(changed[c].to_numpy() for c in ("minx", "miny", "maxx", "maxy"))))
    merged = shapely.union_all(boxes)
    parts = list(merged.geoms) if hasattr(merged, "geoms") else [merged]
    tree = shapely.STRtree(boxes)
    rows = []
    for part in parts:
        members = tree.query(part, predicate="intersects")
        members = [m for m in members if part.contains(shapely.point_on_surface(boxes[m]))]
        values = changed[method].to_numpy()[members]
        rows.append((float(values.max()), float(values.mean()), part, len(members), float(np.percentile(values, AREA_PERCENTILE))))
    local = gpd.GeoSeries([r[2] for r in rows], crs=scores.grid.crs)
    geographic = local.to_crs("EPSG:4326")
    areas = geodesic_areas(geographic)
    frame = gpd.GeoDataFrame(
        {
            "score": [r[4] for r in rows],
            "max_score": [r[0] for r in rows],
            "mean_score": [r[1] for r in rows],
            "area_m2": areas,
            "patches": [r[3] for r in rows],
            "date_before": patches["date_before"].iloc[0],
            "date_after": patches["date_after"].iloc[0],
        },
        geometry=geographic.values,
        crs="EPSG:4326",
    )
    return frame.sort_values("score", ascending=False, ignore_index=True)


# Changed areas are ranked and reported by the 75th percentile of their pixel scores (``score``), chosen on the
# OSCD design cities over max, mean, median and p90 (benchmarks/bench_change_areas.py, results.md).
AREA_PERCENTILE = 75.0
AREA_SCORE = f"p{AREA_PERCENTILE:g} of the area's smoothed pixel scores"


# ------------------------------------------------------------- index-backed change
@dataclass(frozen=True)
class PixelRegularisation:
    """How a per-pixel score map becomes changed areas: smoothing before the cut, and a minimum mapping unit.

    Chosen on the design cities of OSCD (abudhabi, aguasclaras, bercy, bordeaux, hongkong): a Gaussian of
    1 px and areas of at least 10 px (0.1 ha at 10 m) lift pixel F1 of fusion from 0.259 to 0.295 there.
    """

    smooth: float = 1.0  # Gaussian sigma in pixels, applied to the score map before the threshold
    min_pixels: int = 10  # connected changed areas smaller than this are dropped


def pixel_change_mask(scores: ChangeScores, method: ChangeMethod | str, threshold: Threshold | str | float,
                      rule: PixelRegularisation = PixelRegularisation()) -> tuple[np.ndarray, np.ndarray, float]:  # fmt: skip
    """(changed mask, smoothed score map, cut) on the grid from a per-pixel score map; NaN pixels never change."""
    method = ChangeMethod(method).value
    if not scores.pixels or method not in scores.pixels:
        raise BandError(f"no per-pixel {method} scores: score with pixel maps (rscbir change without --level patch)")
    raw = scores.pixels[method]
    valid = np.isfinite(raw)
    if not valid.any():
        return np.zeros(raw.shape, bool), raw, float("inf")
    smoothed = raw
    if rule.smooth > 0:
        filled = np.where(valid, raw, np.nanmedian(raw[valid]))
        smoothed = np.where(valid, ndimage.gaussian_filter(filled, rule.smooth), np.nan).astype(np.float32)
    cut = Threshold.parse(threshold).value(smoothed[valid])
    mask = valid & (np.nan_to_num(smoothed, nan=-np.inf) > cut)
    if rule.min_pixels > 1 and mask.any():
        labels, count = ndimage.label(mask)
        sizes = ndimage.sum(mask, labels, np.arange(1, count + 1))
        mask = np.isin(labels, np.flatnonzero(sizes >= rule.min_pixels) + 1)
    return mask, smoothed, cut


def changed_regions(scores: ChangeScores, mask: np.ndarray, smoothed: np.ndarray) -> gpd.GeoDataFrame:
    """Changed areas traced from a pixel mask as polygons (EPSG:4326), each with its ``score`` (p75 of its
    pixels, see :func:`area_scores`), max/mean score, area in m², pixel count and both dates; best score first."""
    columns = ["score", "max_score", "mean_score", "area_m2", "pixels", "date_before", "date_after"]
    if not mask.any():
        return gpd.GeoDataFrame({c: [] for c in columns}, geometry=[], crs="EPSG:4326")
    labels, count = ndimage.label(mask)
    index = np.arange(1, count + 1)
    maxima = ndimage.maximum(smoothed, labels, index)
    means = ndimage.mean(smoothed, labels, index)
    robust = area_scores(smoothed, labels, count)
    sizes = ndimage.sum(mask, labels, index)
    pieces: dict[int, list] = {}
    for geometry, value in features.shapes(labels.astype(np.int32), mask=mask, transform=scores.grid.transform):
        pieces.setdefault(int(value), []).append(shapely.geometry.shape(geometry))
    local = gpd.GeoSeries([shapely.union_all(pieces[int(k)]) for k in index], crs=scores.grid.crs)
    geographic = local.to_crs("EPSG:4326")
    frame = gpd.GeoDataFrame(
        {
            "score": robust,
            "max_score": np.asarray(maxima, float),
            "mean_score": np.asarray(means, float),
            "area_m2": geodesic_areas(geographic),
            "pixels": np.asarray(sizes, int),
            "date_before": scores.patches["date_before"].iloc[0] if len(scores.patches) else None,
            "date_after": scores.patches["date_after"].iloc[0] if len(scores.patches) else None,
        },
        geometry=geographic.values,
        crs="EPSG:4326",
    )
    return frame.sort_values("score", ascending=False, ignore_index=True)


def area_scores(smoothed: np.ndarray, labels: np.ndarray, count: int, percentile: float = AREA_PERCENTILE) -> np.ndarray:
    """Each labelled area's ``percentile`` of its pixel scores: the score areas are ranked and reported by,
    which one bright pixel (a glint, a colour fringe) cannot dominate the way it dominates the maximum."""
    out = np.zeros(count, float)
    for k, where in enumerate(ndimage.find_objects(labels), start=1):
        if where is not None:
            out[k - 1] = float(np.percentile(smoothed[where][labels[where] == k], percentile))
    return out


# Label-free cuts: pixel scores are heavy-tailed and change is rare (0.3-4 % of OSCD pixels), so an outlier rule
# (median + 3 robust SD) replaces Otsu there (design cities: pixel F1 0.191 -> 0.295 with the regularisation).
PIXEL_THRESHOLD = "robust:3"
PATCH_THRESHOLD = "otsu"


def flag_changes(scores: ChangeScores, method: ChangeMethod | str, threshold: Threshold | str | float | None = None,
                 all_patches: bool = False, rule: PixelRegularisation | None = None) -> tuple[gpd.GeoDataFrame, dict]:  # fmt: skip
    """The changed areas and a summary of the cut (see :func:`change_map`)."""
    found = change_map(scores, method, threshold, rule or PixelRegularisation(), all_patches)
    return found.areas, found.summary


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
        model, (model_before, model_after) = model_options.for_scenes([before, after], preset)
    return score_change(model_before, model_after, model, tiling, spectral=(before, after), pixel_maps=pixel_maps)


def scores_from_index(index: Index, dates: Sequence[str], method: ChangeMethod | str = ChangeMethod.FUSION) -> ChangeScores:
    """Change scores between two dates of an aligned index; ``cosine`` reuses the stored vectors."""
    before_doc, after_doc = index.scenes_on(dates)
    grid, tiling = index.grid, index.tiling
    before, after = Scene.from_dict(before_doc), Scene.from_dict(after_doc)
    if ChangeMethod(method) is ChangeMethod.COSINE:
        frame, _, va, vb = index.co_located(before_doc["scene_id"], after_doc["scene_id"])
        frame["cosine"] = 1 - np.sum(va * vb, axis=1)
        frame["date_before"], frame["date_after"] = before_doc["date"], after_doc["date"]
        return ChangeScores(frame, grid, tiling, before, after)
    return score_change(before, after, model_from_config(index.model_config), tiling, grid)


# --------------------------------------------------------------- one call
@dataclass
class ChangeMap:
    """A change map: the scores, the changed areas (EPSG:4326), the summary of the cut and, at pixel
    level, the changed-pixel mask on ``scores.grid``."""

    scores: ChangeScores
    areas: gpd.GeoDataFrame
    summary: dict
    mask: np.ndarray | None = None


def detect(
    before: Scene | str,
    after: Scene | str,
    method: ChangeMethod | str = ChangeMethod.FUSION,
    *,
    level: str = "pixel",
    threshold: Threshold | str | float | None = None,
    tiling: TilingConfig = TilingConfig(32),
    preset: str | None = None,
    bands: Sequence[str] | None = None,
    model_options: ModelOptions = ModelOptions(),
    rule: PixelRegularisation = PixelRegularisation(),
    all_patches: bool = False,
) -> ChangeMap:
    """What changed between two scenes (paths, band-file folders or opened :class:`Scene`\\ s), in one call.

    Examples
    --------
    >>> from rscbir.change import detect
    >>> found = detect("../shared/data/oscd/rennes/imgs_1", "../shared/data/oscd/rennes/imgs_2", preset="sentinel2")
    >>> found.areas.head()  # changed areas, ranked by their robust score
    """
    if isinstance(before, Scene) and isinstance(after, Scene):
        scenes, loaded = [before, after], load_preset(preset) if preset else None
    else:
        scenes, loaded = SceneOptions(preset, tuple(bands) if bands else None).open([str(before), str(after)])
    scores = score_scenes(scenes[0], scenes[1], tiling, method, model_options, loaded, bool(preset or bands),
                          pixel_maps=level == "pixel")  # fmt: skip
    return change_map(scores, method, threshold, rule, all_patches)


def detect_in_index(index: Index, dates: Sequence[str], method: ChangeMethod | str = ChangeMethod.COSINE,
                    threshold: Threshold | str | float | None = None, all_patches: bool = False) -> ChangeMap:  # fmt: skip
    """What changed between two dates of an aligned index, patch by patch (``cosine``: the stored vectors, no CNN)."""
    return change_map(scores_from_index(index, dates, method), method, threshold, all_patches=all_patches)


def change_map(scores: ChangeScores, method: ChangeMethod | str, threshold: Threshold | str | float | None = None,
               rule: PixelRegularisation = PixelRegularisation(), all_patches: bool = False) -> ChangeMap:  # fmt: skip
    """Areas, summary and pixel mask of scored dates (the cut is computed once and reused for the mask)."""
    method = ChangeMethod(method).value
    pixel_level = bool(scores.pixels) and method in scores.pixels and not all_patches
    rule_ = Threshold.parse(threshold if threshold is not None else (PIXEL_THRESHOLD if pixel_level else PATCH_THRESHOLD))
    if pixel_level:
        mask, smoothed, cut = pixel_change_mask(scores, method, rule_, rule)
        summary = {"method": method, "level": "pixel", "threshold_rule": str(rule_), "threshold": cut,
                   "pixels": int(np.isfinite(smoothed).sum()), "changed_pixels": int(mask.sum()),
                   "smooth_px": rule.smooth, "min_pixels": rule.min_pixels, "area_score": AREA_SCORE}  # fmt: skip
        return ChangeMap(scores, changed_regions(scores, mask, smoothed), summary, mask)
    values = scores.score(method)
    cut = rule_.value(values)
    if all_patches:
        frame = scores.patches[["patch_id", "row", "col", "date_before", "date_after", "geometry", method]]
        frame = frame.rename(columns={method: "score"})
        frame["changed"] = frame["score"] > cut
    else:
        frame = changed_areas(scores, method, cut)
    summary = {"method": method, "level": "patch", "threshold_rule": str(rule_), "threshold": cut, "patches": int(len(values)),
               "changed_patches": int((values > cut).sum()),
               "area_score": f"p{AREA_PERCENTILE:g} of the area's patch scores"}  # fmt: skip
    return ChangeMap(scores, frame, summary)

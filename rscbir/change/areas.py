"""Changed areas: changed patches dissolved, or changed pixels (smoothed, cut, small areas dropped) traced,
into polygons in EPSG:4326 with their scores, areas and dates."""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely
import shapely.geometry
from rasterio import features
from scipy import ndimage

from rscbir.catalog import geodesic_areas
from rscbir.change.scores import ChangeScores
from rscbir.errors import BandError
from rscbir.modes import ChangeMethod, score_name
from rscbir.thresholds import Threshold

def changed_areas(scores: ChangeScores, method: ChangeMethod | str, threshold: float) -> gpd.GeoDataFrame:
    """Adjacent changed patches dissolved into polygons (EPSG:4326) with their score (p75 of the member
    patches), max/mean score, area in m², patch count and both dates; best score first."""
    method = score_name(method)
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


@dataclass(frozen=True)
class PixelRegularisation:
    """How a per-pixel score map becomes changed areas: smoothing before the cut, and a minimum mapping unit.

    Chosen on the design cities of OSCD (abudhabi, aguasclaras, bercy, bordeaux, hongkong): a Gaussian of
    1 px and areas of at least 10 px (0.1 ha at 10 m) lift pixel F1 of fusion from 0.259 to 0.295 there.
    """

    smooth: float = 1.0  # Gaussian sigma in pixels, applied to the score map before the threshold
    min_pixels: int = 10  # connected changed areas smaller than this are dropped


def pixel_change_mask(scores: ChangeScores, method: ChangeMethod | str, threshold: Threshold,
                      rule: PixelRegularisation = PixelRegularisation()) -> tuple[np.ndarray, np.ndarray, float]:  # fmt: skip
    """(changed mask, smoothed score map, cut) on the grid from a per-pixel score map; NaN pixels never change.
    ``threshold`` is parsed already (:meth:`Threshold.parse`, once, where the user gave it)."""
    method = ChangeMethod(method).value
    if not scores.pixels or method not in scores.pixels:
        raise BandError(f"no per-pixel {method} scores: score with pixel maps (rscbir change without --level patch)")
    raw = scores.pixels[method]
    valid = np.isfinite(raw)
    if not valid.any():
        return np.zeros(raw.shape, bool), raw, float("inf")
    smoothed = smooth_scores(raw, rule.smooth)
    cut = threshold.value(smoothed[valid])
    mask = drop_small_areas(valid & (np.nan_to_num(smoothed, nan=-np.inf) > cut), rule.min_pixels)
    return mask, smoothed, cut


def smooth_scores(raw: np.ndarray, sigma: float, fill=None) -> np.ndarray:
    """A score map smoothed by a Gaussian of ``sigma`` px (NaN pixels filled by ``fill``, by default the map's
    median, then NaN again). A part of a larger map, cut with :func:`smoothing_margin` rows to spare on each
    side and given the whole map's median, is smoothed as the whole map is."""
    valid = np.isfinite(raw)
    if sigma <= 0 or not valid.any():
        return raw
    filled = np.where(valid, raw, np.nanmedian(raw[valid]) if fill is None else fill)
    return np.where(valid, ndimage.gaussian_filter(filled, sigma), np.nan).astype(np.float32)


def smoothing_margin(sigma: float) -> int:
    """Rows a Gaussian of ``sigma`` px reaches (scipy's radius at its default truncation, 4 sigma)."""
    return int(4.0 * float(sigma) + 0.5) if sigma > 0 else 0


def drop_small_areas(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """The mask without connected areas smaller than ``min_pixels`` (the minimum mapping unit)."""
    if min_pixels <= 1 or not mask.any():
        return mask
    labels, count = ndimage.label(mask)
    sizes = ndimage.sum(mask, labels, np.arange(1, count + 1))
    return np.isin(labels, np.flatnonzero(sizes >= min_pixels) + 1)


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


__all__ = ["AREA_PERCENTILE", "AREA_SCORE", "PixelRegularisation", "area_scores", "changed_areas", "changed_regions", "drop_small_areas", "pixel_change_mask", "smooth_scores",
           "smoothing_margin"]

"""Retrieval quality against labelled data: mAP and precision at k.

Every image queries all the others (itself excluded); an image of the same
class is relevant. This is the protocol of the RS CBIR literature on scene
sets such as UC Merced, PatternNet and RSSCN7.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from rscbir.change import ChangeMethod, score_change
from rscbir.errors import InvalidSceneError
from rscbir.models.features import FeatureModel
from rscbir.models.load import load_feature_model
from rscbir.scene import Scene
from rscbir.thresholds import Threshold
from rscbir.tiling import TilingConfig, aligned_grid

def retrieval_metrics(vectors: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (5, 10, 50)) -> dict[str, float]:
    """mAP and P@k when every vector queries all the others (cosine similarity).

    Vectors must be L2-normalised. Average precision is over the full ranking.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    labels = np.asarray(labels)
    n = len(vectors)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, : n - 1]  # self ranks last; drop it
    relevant = labels[order] == labels[:, None]
    hits = np.cumsum(relevant, axis=1)
    n_relevant = relevant.sum(axis=1)
    ranks = np.arange(1, n)
    ap = (relevant * hits / ranks).sum(axis=1) / np.maximum(n_relevant, 1)
    result = {"mAP": float(ap[n_relevant > 0].mean()), "queries": int(n)}
    for k in ks:
        k_eff = min(k, n - 1)
        result[f"P@{k}"] = float(hits[:, k_eff - 1].mean() / k_eff)
    return result


# ---------------------------------------------------------------------- change
def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN with one class."""
    labels = np.asarray(labels, dtype=bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = pd.Series(np.asarray(scores, dtype=np.float64)).rank(method="average").to_numpy()
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def precision_recall_f1(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall and F1 of a boolean prediction (recall NaN when nothing is true)."""
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    tp = float((predicted & truth).sum())
    precision = tp / predicted.sum() if predicted.sum() else 0.0
    recall = tp / truth.sum() if truth.sum() else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return float(precision), float(recall), float(f1)


OSCD_CITIES = ("abudhabi", "aguasclaras", "bercy", "bordeaux", "hongkong", "mumbai", "nantes", "paris", "pisa", "rennes")


def oscd_labels_on(city_dir: Path, grid) -> np.ndarray:
    """The OSCD change mask (bool, value 2) cut to ``grid``, a window of date 1's 10 m grid.

    The label raster has no CRS of its own: it lies on the 10 m grid of date 1,
    whose transform is B02's.
    """
    b02 = next((city_dir / "imgs_1").glob("*_B02.tif"))
    with rasterio.open(b02) as ref:
        transform = ref.transform
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(next((city_dir / "cm").glob("*-cm.tif"))) as cm:
            changed = cm.read(1) == 2
    col0 = int(round((grid.transform.c - transform.c) / transform.a))
    row0 = int(round((grid.transform.f - transform.f) / transform.e))
    return changed[row0 : row0 + grid.height, col0 : col0 + grid.width]


def oscd_change_fraction(city_dir: Path, frame, grid) -> np.ndarray:
    """Fraction of labelled-change pixels (value 2) in each patch of ``frame`` (windows on ``grid``)."""
    changed = oscd_labels_on(city_dir, grid)
    fractions = []
    for r in frame.itertuples():
        window = changed[r.row_off : r.row_off + r.height, r.col_off : r.col_off + r.width]
        fractions.append(float(window.mean()) if window.size else np.nan)
    return np.asarray(fractions)


def evaluate_change_oscd(
    root: str | os.PathLike,
    cities: Sequence[str] = OSCD_CITIES,
    patch_size: int = 32,
    cuts: Sequence[float] = (0.0, 0.05, 0.25),
    threshold: Threshold | str = "otsu",
    all_bands: bool = False,
    input_size: int = 224,
    progress: Callable[[str], None] | None = None,
    dense: bool = False,
) -> dict:
    """Patch-level change detection against the OSCD labels, every method and CVA in one run.

    A patch counts as changed when its changed-pixel fraction is above ``cut``
    (0 = any pixel). Each city is thresholded on its own scores by ``threshold``
    (no labels involved). Returns per-city and pooled precision, recall, F1 and
    ROC AUC per method and cut. With ``dense`` also pixel-level figures for the
    per-pixel maps (``dense``, ``cva``, ``fusion``), the threshold applied to each city's pixel scores.
    """
    root, threshold = Path(root), Threshold.parse(threshold)
    tiling = TilingConfig(patch_size)
    methods = [m.value for m in ChangeMethod]
    model: FeatureModel | None = None
    per_city, patch_parts, pixel_parts = {}, [], []
    for city in cities:
        city_dir = root / city
        if model is None:
            model = load_feature_model(["B04", "B03", "B02"] if not all_bands else _oscd_scene(city_dir, 1).band_names,
                                       rgb=["B04", "B03", "B02"], all_bands=all_bands, input_size=input_size)  # fmt: skip
        scores, grid = _score_oscd_city(city_dir, model, tiling, all_bands, dense)
        fraction = oscd_change_fraction(city_dir, scores.patches, grid)
        result = {"patches": int(len(fraction)), "changed_pixel_share": float(np.nanmean(fraction))}
        predictions = {m: scores.score(m) > threshold.value(scores.score(m)) for m in methods}
        for method in methods:
            for cut in cuts:
                result[f"{method}@{cut:g}"] = {**_figures(scores.score(method), predictions[method], fraction > cut),
                                               "changed_patches": int((fraction > cut).sum()),
                                               "flagged": int(predictions[method].sum())}  # fmt: skip
        patch_parts.append((fraction, {m: (scores.score(m), predictions[m]) for m in methods}))
        if dense:
            truth = oscd_labels_on(city_dir, grid)
            pixels = {}
            for method, values in scores.pixels.items():
                valid = np.isfinite(values)
                v, t = values[valid], truth[valid]
                pixels[method] = (v, t, v > threshold.value(v))
                result[f"pixel:{method}"] = _figures(v, pixels[method][2], t)
            pixel_parts.append(pixels)
        per_city[city] = result
        if progress:
            progress(f"{city}: " + ", ".join(f"{m} AUC {result[f'{m}@0.05']['auc']:.3f}" for m in methods))
    pooled = _pooled_figures(patch_parts, pixel_parts, methods, cuts)
    return {"cities": per_city, "pooled": pooled, "patch_size": patch_size, "threshold": str(threshold), "dense": dense,
            "all_bands": all_bands, "methods": methods, "cuts": list(cuts)}  # fmt: skip


def _oscd_scene(city_dir: Path, date: int) -> Scene:
    if not (city_dir / f"imgs_{date}").is_dir():
        raise InvalidSceneError(f"{city_dir}: not an OSCD city folder (imgs_1/, imgs_2/, cm/)")
    return Scene.open(city_dir / f"imgs_{date}")


def _score_oscd_city(city_dir: Path, model: FeatureModel, tiling: TilingConfig, all_bands: bool, dense: bool):
    """Change scores of one OSCD city (CNN on RGB or all bands, CVA on all 13) and its common grid."""
    before_all, after_all = _oscd_scene(city_dir, 1), _oscd_scene(city_dir, 2)
    after_all = after_all.select(before_all.band_names)
    grid = aligned_grid([before_all, after_all])
    bands = before_all.band_names if all_bands else ["B04", "B03", "B02"]
    before, after = before_all.select(bands), after_all.select(bands)
    scores = score_change(before, after, model, tiling, grid, spectral=(before_all, after_all), pixel_maps=dense)
    return scores, grid


def _figures(scores: np.ndarray, predicted: np.ndarray, truth: np.ndarray) -> dict:
    p, r, f1 = precision_recall_f1(predicted, truth)
    return {"precision": p, "recall": r, "f1": f1, "auc": roc_auc(scores, truth)}


def _pooled_figures(patch_parts, pixel_parts, methods, cuts) -> dict:
    """Figures over every city's patches (and pixels) together."""
    pooled = {}
    fraction = np.concatenate([f for f, _ in patch_parts])
    for method in methods:
        values = np.concatenate([parts[method][0] for _, parts in patch_parts])
        predicted = np.concatenate([parts[method][1] for _, parts in patch_parts])
        for cut in cuts:
            pooled[f"{method}@{cut:g}"] = _figures(values, predicted, fraction > cut)
    for method in pixel_parts[0] if pixel_parts else []:
        values, truth, predicted = (np.concatenate([city[method][i] for city in pixel_parts]) for i in range(3))
        pooled[f"pixel:{method}"] = _figures(values, predicted, truth)
    return pooled

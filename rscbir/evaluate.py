"""Retrieval quality against labelled data: mAP and precision at k.

Every image queries all the others (itself excluded); an image of the same
class is relevant. This is the protocol of the RS CBIR literature on scene
sets such as UC Merced, PatternNet and RSSCN7.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from rscbir.errors import InvalidSceneError
from rscbir.models.features import FeatureModel

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class LabelledImages:
    """A class-per-folder image set (ImageFolder layout)."""

    paths: list[Path]
    labels: np.ndarray
    classes: list[str]

    @classmethod
    def scan(cls, root: str | os.PathLike) -> "LabelledImages":
        root = Path(root)
        if not root.is_dir():
            raise InvalidSceneError(f"{root}: not a folder; expected one sub-folder of images per class")
        classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        paths, labels = [], []
        for index, name in enumerate(classes):
            files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            paths += files
            labels += [index] * len(files)
        if len(classes) < 2 or not paths:
            raise InvalidSceneError(f"{root}: needs at least two class sub-folders holding images ({', '.join(IMAGE_SUFFIXES)})")
        return cls(paths, np.asarray(labels), classes)

    def subset(self, indices: Sequence[int]) -> "LabelledImages":
        indices = list(indices)
        return LabelledImages([self.paths[i] for i in indices], self.labels[indices], self.classes)

    def halves(self, seed: int = 0) -> tuple["LabelledImages", "LabelledImages"]:
        """A stratified 50/50 split: train on one half, evaluate on the other only."""
        rng = np.random.default_rng(seed)
        first, second = [], []
        for label in np.unique(self.labels):
            members = rng.permutation(np.flatnonzero(self.labels == label))
            first += members[: len(members) // 2].tolist()
            second += members[len(members) // 2 :].tolist()
        return self.subset(sorted(first)), self.subset(sorted(second))


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """An RGB image as a float tensor (3, H, W) in [0, 1]."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except OSError as exc:
        raise InvalidSceneError(f"{path}: not a readable image ({exc})") from None
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def embed_images(model: FeatureModel, paths: Sequence[Path], batch_size: int = 16, runtime: str = "auto") -> np.ndarray:
    """(N, dim) vectors of image files, in order (images of one size batch together)."""
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
    import pandas as pd

    labels = np.asarray(labels, dtype=bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = pd.Series(np.asarray(scores, dtype=np.float64)).rank(method="average").to_numpy()
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def precision_recall_f1(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
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
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

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
    threshold: str = "otsu",
    all_bands: bool = False,
    input_size: int = 224,
    progress=None,
    dense: bool = False,
) -> dict:
    """Patch-level change detection against the OSCD labels, every method and CVA in one run.

    A patch counts as changed when its changed-pixel fraction is above ``cut``
    (0 = any pixel). Each city is thresholded on its own scores by ``threshold``
    (no labels involved). Returns per-city and pooled precision, recall, F1 and
    ROC AUC per method and cut. With ``dense`` also pixel-level figures for the
    per-pixel maps (``dense``, ``cva``, ``fusion``), Otsu on each city's pixel scores.
    """
    from rscbir.change import ChangeMethod, score_change, threshold_value
    from rscbir.models.load import load_feature_model
    from rscbir.scene import Scene
    from rscbir.tiling import TilingConfig, aligned_grid

    root = Path(root)
    rgb = ["B04", "B03", "B02"]
    tiling = TilingConfig(patch_size)
    model = None
    methods = [m.value for m in ChangeMethod]
    per_city, pooled_scores, pooled_fraction, pooled_pred = {}, {m: [] for m in methods}, [], {m: [] for m in methods}
    pixel_pool: dict[str, list] = {}
    for city in cities:
        city_dir = root / city
        if not (city_dir / "imgs_1").is_dir():
            raise InvalidSceneError(f"{city_dir}: not an OSCD city folder (imgs_1/, imgs_2/, cm/)")
        before_all, after_all = Scene.open(city_dir / "imgs_1"), Scene.open(city_dir / "imgs_2")
        grid = aligned_grid([before_all, after_all])
        if all_bands:
            before, after = before_all, after_all.select(before_all.band_names)
        else:
            before, after = before_all.select(rgb), after_all.select(rgb)
        if model is None:
            model, _ = load_feature_model(before.band_names, rgb=rgb, all_bands=all_bands, input_size=input_size)
        scores = score_change(before, after, model, tiling, grid, spectral=(before_all, after_all.select(before_all.band_names)),
                              pixel_maps=dense)  # fmt: skip
        fraction = oscd_change_fraction(city_dir, scores.patches, grid)
        if dense:
            truth_pixels = oscd_labels_on(city_dir, grid)
        pooled_fraction.append(fraction)
        result = {"patches": int(len(fraction)), "changed_pixel_share": float(np.nanmean(fraction))}
        for method in methods:
            values = scores.score(method)
            cut_value = threshold_value(values, threshold)
            predicted = values > cut_value
            pooled_scores[method].append(values)
            pooled_pred[method].append(predicted)
            for cut in cuts:
                truth = fraction > cut
                p, r, f1 = precision_recall_f1(predicted, truth)
                result[f"{method}@{cut:g}"] = {"precision": p, "recall": r, "f1": f1, "auc": roc_auc(values, truth),
                                               "changed_patches": int(truth.sum()), "flagged": int(predicted.sum())}  # fmt: skip
        if dense:
            for method, values in scores.pixels.items():
                valid = np.isfinite(values)
                v, t = values[valid], truth_pixels[valid]
                p, r, f1 = precision_recall_f1(v > threshold_value(v, threshold), t)
                result[f"pixel:{method}"] = {"precision": p, "recall": r, "f1": f1, "auc": roc_auc(v, t)}
                pixel_pool.setdefault(method, []).append((v, t, v > threshold_value(v, threshold)))
        per_city[city] = result
        if progress:
            progress(f"{city}: " + ", ".join(f"{m} AUC {result[f'{m}@0.05']['auc']:.3f}" for m in methods))
    pooled = {}
    fraction = np.concatenate(pooled_fraction)
    for method in methods:
        values, predicted = np.concatenate(pooled_scores[method]), np.concatenate(pooled_pred[method])
        for cut in cuts:
            truth = fraction > cut
            p, r, f1 = precision_recall_f1(predicted, truth)
            pooled[f"{method}@{cut:g}"] = {"precision": p, "recall": r, "f1": f1, "auc": roc_auc(values, truth)}
    for method, parts in pixel_pool.items():
        values, truth, predicted = (np.concatenate([p[i] for p in parts]) for i in range(3))
        p, r, f1 = precision_recall_f1(predicted, truth)
        pooled[f"pixel:{method}"] = {"precision": p, "recall": r, "f1": f1, "auc": roc_auc(values, truth)}
    return {"cities": per_city, "pooled": pooled, "patch_size": patch_size, "threshold": threshold, "dense": dense,
            "all_bands": all_bands, "methods": methods, "cuts": list(cuts)}  # fmt: skip

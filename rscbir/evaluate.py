"""Quality against labelled data: retrieval mAP and precision at k, change F1 and AUC.

Retrieval: every image queries all the others (itself excluded); an image of
the same class is relevant; AP is over the full ranking. This is the protocol
of the RS CBIR literature on scene sets such as UC Merced, PatternNet and
RSSCN7. Rankings are made the way ``rscbir query`` makes them (query expansion,
relevance feedback), so the figures measure what users get.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from rscbir.change.evidence import default_cache
from rscbir.change.marks import MarkRule
from rscbir.change.pairs import cosine_distance
from rscbir.datasets.oscd import RGB_BANDS, city_pair, city_scene, find_change_sets, oscd_change_fraction, oscd_labels_on
from rscbir.datasets.change_sets import labelled_pairs
from rscbir.datasets.pairs import pair_label, pair_names, pair_scenes
from rscbir.change import PIXEL_THRESHOLD, ChangeMethod, PixelRegularisation, pixel_change_mask, score_change, score_scenes
from rscbir.defaults import DEFAULT_AUGMENT, DEFAULT_DIM
from rscbir.embed import EmbedOptions, embed_images
from rscbir.errors import LabelError
from rscbir.models.features import FeatureModel
from rscbir.datasets.scene_sets import LabelledImages
from rscbir.models.load import load_feature_model, model_for_images, model_for_scenes
from rscbir.models.options import ModelOptions
from rscbir.presets import SceneOptions
from rscbir.metrics import RankingScores, precision_recall_f1, roc_auc
from rscbir.models.whitening import PCAWhitening
from rscbir.errors import QueryError
from rscbir.index import Index, build_index
from rscbir.query import query_patch
from rscbir.rerank import QueryExpansion, augment_database, feedback_vector
from rscbir.thresholds import Threshold
from rscbir.tiling import TilingConfig, aligned_grid

if TYPE_CHECKING:
    from rscbir.change.head import ChangeHead

def retrieval_metrics(
    vectors: np.ndarray,
    labels: np.ndarray,
    ks: Sequence[int] = (5, 10, 50),
    expansion: QueryExpansion = QueryExpansion(0),
    feedback_top: int = 0,
    augment: int = 0,
    block: int = 512,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """mAP and P@k when every vector queries all the others, ranked as ``rscbir query`` ranks.

    Vectors must be L2-normalised. Average precision is over the full ranking of
    the other n - 1 items (every relevant item counts). Queries run in blocks of
    ``block`` rows, so memory is ``block x n``, never ``n x n``. ``augment`` k
    ranks against database-side augmented vectors, as an index built with
    ``--augment k`` does; ``expansion`` applies query expansion to each query
    first. With ``feedback_top`` N, one
    simulated feedback round follows: the top N of that ranking are marked right
    or wrong by their label, the query is re-ranked by the Rocchio direction of
    the query and the marks (marked-wrong items removed), and the figures after it
    are returned under ``"feedback"``.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    labels = np.asarray(labels)
    n = len(vectors)
    if n < 2:
        raise LabelError("retrieval evaluation needs at least two images")
    database = augment_database(vectors, augment) if augment else vectors
    first = RankingScores(n, ks)
    second = RankingScores(n, ks) if feedback_top else None
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        sims = vectors[rows] @ database.T
        sims[np.arange(len(rows)), rows] = -np.inf
        if expansion.enabled:
            top = np.argpartition(-sims, min(expansion.k, n - 2), axis=1)[:, : expansion.k]
            queries = expansion.expand(vectors[rows], database[top], np.take_along_axis(sims, top, 1))
            sims = queries @ database.T
            sims[np.arange(len(rows)), rows] = -np.inf
        first.add(sims, labels[rows], labels)
        if second is not None:
            second.add(_feedback_scores(vectors, database, labels, rows, sims, feedback_top), labels[rows], labels)
        if progress:
            progress(f"ranked {rows[-1] + 1} of {n} queries")
    result = first.result()
    if second is not None:
        result["feedback"] = {**second.result(), "marked_top": int(feedback_top), "model": "rocchio"}
    return result


def evaluate_retrieval(
    images: LabelledImages,
    model_options: ModelOptions = ModelOptions(),
    dim: int | None = DEFAULT_DIM,
    whiten: float = 0.0,
    expansion: QueryExpansion = QueryExpansion(),
    feedback_top: int = 0,
    augment: int = DEFAULT_AUGMENT,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Embed a labelled image set as ``rscbir index`` embeds patches (same model options, centred PCA
    fitted on the set itself, database-side augmentation), rank as ``rscbir query`` ranks, and return
    :func:`retrieval_metrics` with the settings and the embedding speed."""
    model = model_for_images(model_options)
    start = time.perf_counter()
    vectors = embed_images(model, images.paths, runtime=model_options.runtime)
    seconds = time.perf_counter() - start
    if dim and len(vectors) > dim:
        vectors = PCAWhitening.fit(vectors, dim, whiten).transform(vectors)
    config = model.config
    return {
        **retrieval_metrics(vectors, images.labels, expansion=expansion, feedback_top=feedback_top, augment=augment, progress=progress),
        "map_definition": "mean over queries of average precision over the full ranking of all other images",
        "backbone": config.backbone,
        "weights": config.checkpoint or config.weights,
        "checkpoint": bool(config.checkpoint),
        "pooling": config.pooling,
        "stages": config.stages,
        "views": config.views,
        "input_size": config.input_size,
        "dim": int(vectors.shape[1]),
        "whiten_power": whiten if dim else None,
        "query_expansion": {"k": expansion.k, "alpha": expansion.alpha},
        "augment": augment,
        "images_per_second": len(images.paths) / seconds,
        "runtime": model_options.runtime.value,
    }


def _feedback_scores(vectors, database, labels, rows, sims, top_n: int) -> np.ndarray:
    """Scores after one simulated feedback round on the top ``top_n`` of ``sims`` (rows = queries)."""
    out = np.empty_like(sims)
    top = np.argsort(-sims, axis=1, kind="stable")[:, :top_n]
    for q, row in enumerate(rows):
        marked = top[q]
        right = labels[marked] == labels[row]
        direction = feedback_vector(np.vstack([vectors[row][None], vectors[marked[right]]]), vectors[marked[~right]])
        out[q] = database @ direction
        out[q, marked[~right]] = -np.inf  # marked wrong: not shown again
        out[q, row] = -np.inf
    return out


# ---------------------------------------------------------------------- change


def evaluate_change_oscd(
    root: str | os.PathLike,
    cities: Sequence[str] | None = None,
    patch_size: int = 32,
    cuts: Sequence[float] = (0.0, 0.05, 0.25),
    threshold: Threshold | str = "otsu",
    all_bands: bool = False,
    input_size: int = 224,
    progress: Callable[[str], None] | None = None,
    dense: bool = False,
    pixel_threshold: Threshold | str = PIXEL_THRESHOLD,
    rule: PixelRegularisation = PixelRegularisation(),
) -> dict:
    """Patch-level change detection against the OSCD labels, every method and CVA in one run.

    A patch counts as changed when its changed-pixel fraction is above ``cut``
    (0 = any pixel). Each city is thresholded on its own scores by ``threshold``
    (no labels involved). Returns per-city and pooled precision, recall, F1 and
    ROC AUC per method and cut. With ``dense`` also pixel-level figures for the
    per-pixel maps (``dense``, ``cva``, ``fusion``), made the way ``rscbir change`` makes its pixel
    mask (smoothing, ``pixel_threshold`` per city, minimum mapping unit), pooled and as the mean of cities.
    """
    root, threshold, pixel_threshold = Path(root), Threshold.parse(threshold), Threshold.parse(pixel_threshold)
    cities = list(cities or find_change_sets(root))
    tiling = TilingConfig(patch_size)
    methods = [m.value for m in ChangeMethod]
    model: FeatureModel | None = None
    per_city, patch_parts, pixel_parts = {}, [], []
    for city in cities:
        city_dir = root / city
        if model is None:
            model = load_feature_model(list(RGB_BANDS) if not all_bands else city_scene(city_dir, 1).band_names,
                                       rgb=list(RGB_BANDS), all_bands=all_bands, input_size=input_size)  # fmt: skip
        scores, grid = _score_oscd_city(city_dir, model, tiling, all_bands, dense)
        fraction = oscd_change_fraction(city_dir, scores.patches, grid)
        result = {"patches": int(len(fraction)), "changed_pixel_share": float(np.nanmean(fraction))}
        predictions = {m: scores.score(m) > threshold.value(scores.score(m)) for m in methods}
        for method in methods:
            for cut in cuts:
                result[figure_key(method, cut)] = {**_figures(scores.score(method), predictions[method], fraction > cut),
                                               "changed_patches": int((fraction > cut).sum()),
                                               "flagged": int(predictions[method].sum())}  # fmt: skip
        patch_parts.append((fraction, {m: (scores.score(m), predictions[m]) for m in methods}))
        if dense:
            truth = oscd_labels_on(city_dir, grid)
            pixels = {}
            for method, values in scores.pixels.items():
                mask, smoothed, _ = pixel_change_mask(scores, method, pixel_threshold, rule)
                valid = np.isfinite(values)
                v, t = smoothed[valid], truth[valid]
                pixels[method] = (v, t, mask[valid])
                result[figure_key(method)] = _figures(v, mask[valid], t)
            pixel_parts.append(pixels)
        per_city[city] = result
        if progress:
            progress(f"{city}: " + ", ".join(f"{m} AUC {result[figure_key(m, 0.05)]['auc']:.3f}" for m in methods))
    pooled = _pooled_figures(patch_parts, pixel_parts, methods, cuts)
    city_mean = {key: {m: float(np.nanmean([per_city[c][key][m] for c in per_city])) for m in ("precision", "recall", "f1", "auc")}
                 for key in next(iter(per_city.values())) if isinstance(next(iter(per_city.values()))[key], dict)}  # fmt: skip
    return {"cities": per_city, "pooled": pooled, "mean_of_cities": city_mean, "patch_size": patch_size, "threshold": str(threshold),
            "pixel_threshold": str(pixel_threshold), "smooth_px": rule.smooth, "min_pixels": rule.min_pixels,
            "dense": dense, "all_bands": all_bands, "methods": methods, "cuts": list(cuts)}  # fmt: skip


def figure_key(method: str, cut: float | None = None) -> str:
    """The key of one figure set in a change evaluation: ``fusion@0.05`` (patch level, changed above ``cut``) or
    ``pixel:fusion`` (pixel level, ``cut`` None). The one place the key is spelled; readers call it too."""
    return f"pixel:{method}" if cut is None else f"{method}@{cut:g}"


def _score_oscd_city(city_dir: Path, model: FeatureModel, tiling: TilingConfig, all_bands: bool, dense: bool):
    """Change scores of one OSCD city (CNN on RGB or all bands, CVA on all 13) and its common grid."""
    before_all, after_all = city_pair(city_dir)
    grid = aligned_grid([before_all, after_all])
    bands = before_all.band_names if all_bands else list(RGB_BANDS)
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
            pooled[figure_key(method, cut)] = _figures(values, predicted, fraction > cut)
    for method in pixel_parts[0] if pixel_parts else []:
        values, truth, predicted = (np.concatenate([city[method][i] for city in pixel_parts]) for i in range(3))
        pooled[figure_key(method)] = _figures(values, predicted, truth)
    return pooled


# ------------------------------------------------------------ ground, not acquisition
def evaluate_other_dates(index: Index, k: int = 10, probes: int = 200, seed: int = 0, places: bool = True) -> dict:
    """Does a search in a multi-date index reach the other dates? For ``probes`` patches drawn at random (seeded),
    query by patch as ``rscbir query --patch-id`` does (distinct places with ``places``) and report the share of
    each query's top ``k`` that comes from another date than the query's: overall, and by the query's date."""
    dates = index.manifest.dates
    if len(dates) < 2:
        raise QueryError(f"{index.path}: holds {len(dates)} date(s); the share from other dates needs two or more")
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(len(index), min(probes, len(index)), replace=False))
    shares: dict[str, list[float]] = {d: [] for d in dates}
    for row in index.patches(ids).itertuples():
        hits = query_patch(index, row.patch_id, k, places=places).hits
        if len(hits) and row.date:
            shares[row.date].append(float(np.mean(hits["date"].to_numpy() != row.date)))
    every = [s for values in shares.values() for s in values]
    return {"index": str(index.path), "k": k, "probes": len(every), "places": places, "dates": dates,
            "other_dates_share": float(np.mean(every)) if every else float("nan"),
            "by_query_date": {d: float(np.mean(v)) if v else None for d, v in shares.items()}}  # fmt: skip


def evaluate_same_place(
    root: str | os.PathLike,
    cities: Sequence[str] | None = None,
    model_options: ModelOptions = ModelOptions(),
    tiling: TilingConfig = TilingConfig(32),
    embed_options: EmbedOptions = EmbedOptions(),
    centre_scenes: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Does a search across dates find the same ground? For each OSCD city both dates are indexed on one
    grid (as ``rscbir index build --align`` does); for every place the labels mark unchanged (no changed pixel),
    the other date's patches are ranked by cosine to it. Reports the share ranked first and the median rank."""
    root = Path(root)
    cities = list(cities or find_change_sets(root))
    per_city, ranks_all = {}, []
    with tempfile.TemporaryDirectory(prefix="rscbir-same-place-") as tmp:
        for city in cities:
            city_dir = root / city
            before, after = city_pair(city_dir)
            model, (before, after) = model_for_scenes([before.select(list(RGB_BANDS)), after.select(list(RGB_BANDS))], None,
                                                      model_options)  # fmt: skip
            index, _ = build_index(Path(tmp) / city, [before, after], model, tiling, align=True, options=embed_options,
                                   augment=0, centre_scenes=centre_scenes)  # fmt: skip
            rows_a, _, va, vb = index.co_located(before.scene_id, after.scene_id)
            unchanged = oscd_change_fraction(city_dir, rows_a, index.grid) == 0
            others = np.asarray(index.vectors[(index.catalog["scene_id"] == after.scene_id).to_numpy()], np.float32)
            same = 1 - cosine_distance(va, vb)
            ranks = 1 + ((va[unchanged] @ others.T) > same[unchanged, None] + 1e-6).sum(axis=1)
            per_city[city] = {"places": int(unchanged.sum()), "first": float(np.mean(ranks == 1)), "median_rank": float(np.median(ranks)),
                              "candidates": int(len(others))}  # fmt: skip
            ranks_all.append(ranks)
            if progress:
                progress(f"{city}: same place first for {per_city[city]['first']:.2f} of {per_city[city]['places']} unchanged places")
    ranks = np.concatenate(ranks_all)
    return {"cities": per_city, "places": int(len(ranks)), "first": float(np.mean(ranks == 1)), "median_rank": float(np.median(ranks)),
            "mean_of_cities": float(np.mean([c["first"] for c in per_city.values()])), "pooling": model_options.pooling.value,
            "stages": model_options.stages, "dim": embed_options.dim, "whiten": embed_options.whiten, "centre_scenes": centre_scenes,
            "patch_size": tiling.to_dict()["patch_size"]}  # fmt: skip


def evaluate_change_pairs(
    root: str | os.PathLike,
    model_options: ModelOptions = ModelOptions(),
    patch_size: int = 64,
    method: ChangeMethod | str = ChangeMethod.FUSION,
    pixel_threshold: Threshold | str = PIXEL_THRESHOLD,
    rule: PixelRegularisation = PixelRegularisation(),
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Pixel-level change figures on an ``A/``, ``B/``, ``label/`` image-pair set, made as ``rscbir change`` makes
    its pixel mask (and CVA's, for comparison). Plain PNG pairs get a nominal 1 m grid for the pipeline; label
    pixels above 0 are change."""
    root, pixel_threshold = Path(root), Threshold.parse(pixel_threshold)
    names = pair_names(root)
    parts: dict[str, list] = {}
    per_image, notes = {}, {}
    with tempfile.TemporaryDirectory(prefix="rscbir-pairs-") as tmp:
        for name in names:
            before, after = pair_scenes(root, name, tmp)
            truth = pair_label(root, name, before.grid.shape)
            if not truth.any():
                notes[name] = "no change pixels in the label: recall and AUC are undefined (NaN); precision counts false alarms"
            scores = score_scenes(before, after, TilingConfig(patch_size, edge="pad"), method, model_options, pixel_maps=True)
            per_image[name] = {}
            for name_method in (ChangeMethod(method).value, ChangeMethod.CVA.value):
                mask, smoothed, _ = pixel_change_mask(scores, name_method, pixel_threshold, rule)
                valid = np.isfinite(smoothed) & np.ones_like(truth)
                v, t, m = smoothed[valid], truth[: smoothed.shape[0], : smoothed.shape[1]][valid], mask[valid]
                per_image[name][name_method] = _figures(v, m, t)
                parts.setdefault(name_method, []).append((v, t, m))
            if progress:
                progress(f"{name}: " + ", ".join(f"{k} F1 {f['f1']:.3f}" for k, f in per_image[name].items()))
    pooled = {}
    for name_method, chunks in parts.items():
        values, truth, predicted = (np.concatenate([c[i] for c in chunks]) for i in range(3))
        pooled[name_method] = {**_figures(values, predicted, truth),
                               "mean_of_images_f1": _nan_mean([f[name_method]["f1"] for f in per_image.values()])}  # fmt: skip
    return {"images": per_image, "pooled": pooled, "patch_size": patch_size, "pixel_threshold": str(pixel_threshold),
            "smooth_px": rule.smooth, "min_pixels": rule.min_pixels, "notes": notes}  # fmt: skip


def evaluate_taught_change(
    root: str | os.PathLike,
    names: Sequence[str] | None = None,
    scene_options: SceneOptions = SceneOptions(),
    tiling: TilingConfig = TilingConfig(32),
    head: ChangeHead | None = None,
    clicks: Sequence[int] = (),
    rounds: int = 1,
    seeds: int = 3,
    rule: MarkRule = MarkRule(),
    regularisation: PixelRegularisation = PixelRegularisation(),
    cache: str | os.PathLike | None = "default",
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Pixel-level change figures of maps taught the way users teach them, on labelled pairs (OSCD cities or
    ``A/ B/ label/`` pairs), beside the label-free default and CVA: the change model ``head`` alone, and for each
    N in ``clicks`` the map after N simulated clicks per pair (:func:`rscbir.change.clicks.first_clicks`, ``seeds``
    draws), then ``rounds - 1`` more rounds of N clicks where the map is most wrong. Pooled over pairs and seeds."""
    from rscbir.change.clicks import correcting_clicks, first_clicks
    from rscbir.change.marks import Marks
    from rscbir.change.taught import starting_logit, taught_change_map
    from rscbir.change.training import labelled_evidence

    cache = default_cache() if cache == "default" else cache
    model = head.backbone() if head is not None else None
    totals: dict[str, np.ndarray] = {}
    per_pair = {}
    for pair in labelled_pairs(root, names, scene_options):
        evidence, meta = labelled_evidence(pair, tiling, model=model, cache=cache)
        if head is not None:
            head.check(meta)
        valid, truth = evidence.valid, pair.truth & evidence.valid
        counts: dict[str, np.ndarray] = {}

        def count(key: str, mask: np.ndarray) -> None:
            m = mask & valid
            found = np.array([(m & truth).sum(), (m & ~truth).sum(), (~m & truth & valid).sum()], np.int64)
            counts[key] = counts.get(key, 0) + found

        for method in (ChangeMethod.FUSION.value, ChangeMethod.CVA.value):
            count(f"label-free {method}", pixel_change_mask(evidence.scores, method, PIXEL_THRESHOLD, regularisation)[0])
        start = starting_logit(evidence, head, regularisation.smooth)
        if head is not None:
            count("change model", taught_change_map(evidence, head, None, rule, regularisation, start).mask)
        for n in clicks:
            for seed in range(seeds):
                labels = first_clicks(truth, valid, n, seed)
                for r in range(rounds):
                    if r:
                        labels = correcting_clicks(truth, mask, valid, n, labels)
                    marks = Marks(labels, int((labels >= 0).sum()))
                    mask = taught_change_map(evidence, head, marks, rule, regularisation, start).mask
                    count(click_key(n, r + 1 if rounds > 1 else None), mask)
        per_pair[pair.name] = {key: _f1_of(c) for key, c in counts.items()}
        per_pair[pair.name]["changed_share"] = float(truth.sum() / max(valid.sum(), 1))
        for key, c in counts.items():
            totals[key] = totals.get(key, 0) + c
        if progress:
            progress(f"{pair.name}: " + ", ".join(f"{k} F1 {v['f1']:.3f}" for k, v in per_pair[pair.name].items() if isinstance(v, dict)))
    return {"pairs": per_pair, "pooled": {key: _f1_of(c) for key, c in totals.items()}, "clicks": list(clicks), "rounds": rounds,
            "seeds": seeds, "patch_size": tiling.to_dict()["patch_size"], "change_model": head.meta.get("pairs") if head else None,
            "mark_rule": dataclasses.asdict(rule), "smooth_px": regularisation.smooth, "min_pixels": regularisation.min_pixels}  # fmt: skip


def click_key(clicks: int, round_: int | None = None) -> str:
    """The key of the figures after ``clicks`` simulated clicks (in round ``round_`` of several)."""
    return f"{clicks} clicks" + (f", round {round_}" if round_ else "")


def _f1_of(counts: np.ndarray) -> dict:
    tp, fp, fn = (int(v) for v in counts)
    return {"precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1), "f1": 2 * tp / max(2 * tp + fp + fn, 1)}


def _nan_mean(values) -> float:
    """Mean of the defined values; NaN (without a warning) when none is."""
    values = np.asarray(values, dtype=np.float64)
    return float(values[np.isfinite(values)].mean()) if np.isfinite(values).any() else float("nan")

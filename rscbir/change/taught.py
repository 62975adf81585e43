"""Change maps taught by the user: a labelled-pair change model, marks, or both, on a pair's evidence.

The starting score is the change model's (``rscbir finetune-change``) when one is given, else the label-free
``fusion`` score with its robust cut; both are put on one scale, a logit that is 0 at the cut. Marks then
correct it around themselves (:func:`rscbir.change.marks.correct_with_marks`), in the space of the change
model's hidden units when there is one (learnt to tell change apart), else of the evidence's principal
components. Pixels above 0 after smoothing are changed; areas smaller than the minimum mapping unit drop.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

import numpy as np

from rscbir.change.areas import AREA_PERCENTILE, AREA_SCORE, PixelRegularisation, changed_areas, changed_regions, drop_small_areas, smooth_scores
from rscbir.change.detection import PATCH_THRESHOLD, PIXEL_THRESHOLD, ChangeMap, open_pair
from rscbir.change.scores import ChangeScores
from rscbir.change.evidence import PairEvidence
from rscbir.change.marks import MarkRule, Marks, correct_with_marks, evidence_space, mark_regions, read_marks
from rscbir.errors import ModelMismatchError
from rscbir.models.options import ModelOptions
from rscbir.modes import TAUGHT, ChangeMethod
from rscbir.presets import Preset
from rscbir.scene import Scene
from rscbir.thresholds import Threshold, robust_spread
from rscbir.tiling import TilingConfig

LOGIT_LIMIT = 10.0

if TYPE_CHECKING:
    from rscbir.change.head import ChangeHead


def starting_logit(evidence: PairEvidence, head: ChangeHead | None, smooth: float) -> tuple[np.ndarray, np.ndarray]:
    """(logit (H, W), 0 at the cut; evidence space (n_valid, d)) of the change model, or of the label-free
    ``fusion`` score cut at median + 3 robust SD (the default pixel rule)."""
    valid = evidence.valid
    if head is not None:
        from rscbir.change.head import change_mask  # torch loads with the head

        probability, hidden = head.predict(evidence)
        _, smoothed = change_mask(probability, head.cut, smooth, 1)
        p = np.clip(smoothed, 1e-4, 1 - 1e-4)
        logit = np.log(p / (1 - p)) - np.log(head.cut / (1 - head.cut))
        return logit.astype(np.float32), evidence_space(hidden, MarkRule().components)
    smoothed = smooth_scores(evidence.scores.pixels["fusion"], smooth)
    median, spread = robust_spread(smoothed[valid])
    spread = spread if spread > 1e-6 else 1.0
    cut = PIXEL_THRESHOLD.value(smoothed[valid])
    logit = np.where(valid, (smoothed - cut) / spread, np.nan).astype(np.float32)
    return logit, evidence_space(evidence.pixels(), MarkRule().components)


def taught_change_map(evidence: PairEvidence, head: ChangeHead | None = None, marks: Marks | None = None,
                      rule: MarkRule = MarkRule(), regularisation: PixelRegularisation = PixelRegularisation(),
                      start: tuple[np.ndarray, np.ndarray] | None = None) -> ChangeMap:  # fmt: skip
    """The change map of a pair taught by a change model and/or marks (see the module); its score
    (``scores.pixels['taught']``, also the score raster's) is the probability of change, 0.5 at the cut.
    ``start`` is :func:`starting_logit`'s answer when it was computed already (rounds of simulated clicks)."""
    valid = evidence.valid
    logit, space = start if start is not None else starting_logit(evidence, head, regularisation.smooth)
    logit = np.clip(logit, -LOGIT_LIMIT, LOGIT_LIMIT)  # a mark can outvote any place: certainty saturates
    corrected = logit.copy()
    used = 0
    if marks is not None:
        at = (marks.labels >= 0) & valid
        rows = np.full(valid.shape, -1)
        rows[valid] = np.arange(int(valid.sum()))
        positions = np.argwhere(valid).astype(np.float32)
        placed = mark_regions(logit, valid, marks.labels, rule) if rule.regions else logit
        corrected[valid] = correct_with_marks(placed[valid], space, rows[at], marks.labels[at].astype(int), rule, positions)
        used = int(at.sum())
    mask = drop_small_areas(valid & (np.nan_to_num(corrected, nan=-np.inf) > 0), regularisation.min_pixels)
    probability = np.where(valid, 1 / (1 + np.exp(-np.clip(corrected, -30, 30))), np.nan).astype(np.float32)
    evidence.scores.pixels[TAUGHT] = probability
    summary = {"method": TAUGHT, "level": "pixel", "taught_by": _taught_by(head, marks), "threshold_rule": "probability > 0.5",
               "threshold": 0.5, "pixels": int(valid.sum()), "changed_pixels": int(mask.sum()), "smooth_px": regularisation.smooth,
               "min_pixels": regularisation.min_pixels, "area_score": AREA_SCORE.replace("smoothed pixel scores", "probabilities"),
               "marked_pixels": used, "mark_rule": {"bandwidth": rule.bandwidth, "reach_px": rule.reach, "margin": rule.margin}}  # fmt: skip
    if head is not None:
        summary["change_model"] = {"cut": head.cut, "holdout_f1": head.meta.get("holdout_f1"), "trained_on": head.meta.get("pairs")}
    return ChangeMap(evidence.scores, changed_regions(evidence.scores, mask, probability), summary, mask)


def teach(before: Scene | str, after: Scene | str, marks: str | os.PathLike | None = None,
          change_model: ChangeHead | str | os.PathLike | None = None, *, preset: str | Preset | None = None,
          bands: Sequence[str] | None = None, named_bands: bool | None = None, tiling: TilingConfig = TilingConfig(32), model_options: ModelOptions = ModelOptions(),
          regularisation: PixelRegularisation = PixelRegularisation(), cache: str | os.PathLike | None = "default") -> ChangeMap:  # fmt: skip
    """What changed between two scenes, taught by ``marks`` (a vector file of points or polygons with ``changed`` 1/0)
    and/or ``change_model`` (a ``rscbir finetune-change`` checkpoint), in one call, as ``rscbir change --marks
    --weights`` makes it. The pair's CNN evidence is cached (``cache``), so a new round of marks takes seconds.

    Examples
    --------
    >>> from rscbir.change import teach
    >>> found = teach("../shared/data/oscd/rennes/imgs_1", "../shared/data/oscd/rennes/imgs_2", "marks.geojson", preset="sentinel2")
    >>> found.summary["changed_pixels"], found.areas.head()
    """
    from rscbir.change.evidence import default_cache, scene_evidence
    from rscbir.tiling import aligned_grid

    scenes, loaded = open_pair(before, after, preset, bands)
    named = named_bands if named_bands is not None else bool(preset or bands)
    read = read_marks(marks, aligned_grid(scenes)) if marks is not None else None  # a bad file fails before the CNN runs
    head, model = change_model, None
    if isinstance(change_model, (str, os.PathLike)):
        from rscbir.change.head import read_change_head  # torch loads with a change model

        head = read_change_head(change_model)
        if head is None:
            raise ModelMismatchError(f"{change_model}: not a change model; train one with `rscbir finetune-change`")
    if head is not None:
        model = head.backbone()
    evidence, meta = scene_evidence(scenes[0], scenes[1], tiling, model_options, loaded, named, model,
                                    cache=default_cache() if cache == "default" else cache)  # fmt: skip
    if head is not None:
        head.check(meta)
    return taught_change_map(evidence, head, read, regularisation=regularisation)


PATCH_MARKS = MarkRule(grow=2, least=0)  # patch level: a "changed" mark grows over leaning patches at most 2 patches away


def taught_patch_map(scores: ChangeScores, method: ChangeMethod | str, labels: np.ndarray, threshold: Threshold | None = None,
                     rule: MarkRule = PATCH_MARKS) -> ChangeMap:  # fmt: skip
    """A patch-level change map (e.g. two dates of an index) taught by marks: ``labels`` (n,) per patch of
    ``scores.patches``, 1 changed, 0 not changed, -1 unmarked. As at pixel level a mark answers for its place
    (:func:`rscbir.change.marks.mark_regions` on the grid of patches): "not changed" clears the group of adjacent
    changed patches it lies on, "changed" flags the adjacent patches that lean toward change."""
    method = ChangeMethod(method).value
    values = scores.score(method)
    rule_ = threshold or PATCH_THRESHOLD
    cut = rule_.value(values)
    _, spread = robust_spread(values)
    logit = (values - cut) / (spread if spread > 1e-6 else 1.0)
    rows, cols = scores.patches["row"].to_numpy(), scores.patches["col"].to_numpy()
    on_grid = np.full((rows.max() + 1, cols.max() + 1), np.nan, np.float32)
    on_grid[rows, cols] = logit
    marked = np.full(on_grid.shape, -1, np.int8)
    marked[rows, cols] = labels
    placed = mark_regions(on_grid, np.isfinite(on_grid), marked, rule)[rows, cols]
    placed = np.where(labels == 1, np.maximum(placed, rule.margin), np.where(labels == 0, np.minimum(placed, -rule.margin), placed))
    scores.patches[TAUGHT] = 1 / (1 + np.exp(-np.clip(placed, -30, 30)))
    changed = placed > 0
    summary = {"method": TAUGHT, "level": "patch", "taught_by": f"label-free {method} + {int((labels >= 0).sum())} marked patches",
               "threshold_rule": "probability > 0.5", "threshold": 0.5, "label_free_threshold": f"{rule_} ({cut:.4g})",
               "patches": int(len(values)), "changed_patches": int(changed.sum()), "marked_patches": int((labels >= 0).sum()),
               "area_score": f"p{AREA_PERCENTILE:g} of the area's patch probabilities"}  # fmt: skip
    return ChangeMap(scores, changed_areas(scores, TAUGHT, 0.5), summary)


def _taught_by(head, marks) -> str:
    parts = (["change model"] if head is not None else ["label-free fusion"]) + ([f"{marks.count} marks"] if marks is not None else [])
    return " + ".join(parts)


__all__ = ["PATCH_MARKS", "starting_logit", "taught_change_map", "taught_patch_map", "teach"]

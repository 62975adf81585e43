"""What changed, in one call: scores, the label-free cut, changed areas and their summary (the CLI's library call)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import geopandas as gpd
import numpy as np

from rscbir.change.areas import AREA_PERCENTILE, AREA_SCORE, PixelRegularisation, changed_areas, changed_regions, pixel_change_mask
from rscbir.change.scores import ChangeScores, score_scenes, scores_from_index
from rscbir.models.options import ModelOptions
from rscbir.modes import ChangeMethod
from rscbir.presets import Preset, SceneOptions, load_preset
from rscbir.scene import Scene
from rscbir.thresholds import Threshold
from rscbir.tiling import TilingConfig

if TYPE_CHECKING:
    from rscbir.index.reader import Index

# Label-free cuts: pixel scores are heavy-tailed and change is rare (0.3-4 % of OSCD pixels), so an outlier rule
# (median + 3 robust SD) replaces Otsu there (design cities: pixel F1 0.191 -> 0.295 with the regularisation).
PIXEL_THRESHOLD = Threshold.parse("robust:3")
PATCH_THRESHOLD = Threshold.parse("otsu")


def flag_changes(scores: ChangeScores, method: ChangeMethod | str, threshold: Threshold | str | float | None = None,
                 all_patches: bool = False, rule: PixelRegularisation | None = None) -> tuple[gpd.GeoDataFrame, dict]:  # fmt: skip
    """The changed areas and a summary of the cut (see :func:`change_map`)."""
    found = change_map(scores, method, threshold, rule or PixelRegularisation(), all_patches)
    return found.areas, found.summary


# --------------------------------------------------------------- one call
@dataclass
class ChangeMap:
    """A change map: the scores, the changed areas (EPSG:4326), the summary of the cut and, at pixel
    level, the changed-pixel mask on ``scores.grid`` (a map made in strips, :func:`rscbir.change.stream_change`,
    holds no whole-grid array: ``view`` has the scores and mask at the pixels a preview shows)."""

    scores: ChangeScores
    areas: gpd.GeoDataFrame
    summary: dict
    mask: np.ndarray | None = None
    view: object | None = None  # rscbir.change.streamed.PixelView


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

    The result holds the whole pixel maps in memory (about 40 MiB per Mpx); for large scenes
    :func:`rscbir.change.stream_change` makes the same map in strips, in flat memory (what ``rscbir change`` runs).

    Examples
    --------
    >>> from rscbir.change import detect
    >>> found = detect("../shared/data/oscd/rennes/imgs_1", "../shared/data/oscd/rennes/imgs_2", preset="sentinel2")
    >>> found.areas.head()  # changed areas, ranked by their robust score
    """
    scenes, loaded = open_pair(before, after, preset, bands)
    scores = score_scenes(scenes[0], scenes[1], tiling, method, model_options, loaded, bool(preset or bands),
                          pixel_maps=level == "pixel")  # fmt: skip
    return change_map(scores, method, threshold, rule, all_patches)


def open_pair(before: Scene | str, after: Scene | str, preset: str | Preset | None = None,
              bands: Sequence[str] | None = None) -> tuple[list[Scene], Preset | None]:
    """Two scenes (paths, band-file folders or opened scenes) and the preset they are read with (a name or a Preset)."""
    if isinstance(before, Scene) and isinstance(after, Scene):
        return [before, after], load_preset(preset) if isinstance(preset, str) else preset
    name = preset.name if isinstance(preset, Preset) else preset
    return SceneOptions(name, tuple(bands) if bands else None).open([str(before), str(after)])


def detect_in_index(index: Index, dates: Sequence[str], method: ChangeMethod | str = ChangeMethod.COSINE,
                    threshold: Threshold | str | float | None = None, all_patches: bool = False) -> ChangeMap:  # fmt: skip
    """What changed between two dates of an aligned index, patch by patch (``cosine``: the stored vectors, no CNN)."""
    return change_map(scores_from_index(index, dates, method), method, threshold, all_patches=all_patches)


def change_map(scores: ChangeScores, method: ChangeMethod | str, threshold: Threshold | str | float | None = None,
               rule: PixelRegularisation = PixelRegularisation(), all_patches: bool = False) -> ChangeMap:  # fmt: skip
    """Areas, summary and pixel mask of scored dates (the cut is computed once and reused for the mask)."""
    method = ChangeMethod(method).value
    pixel_level = bool(scores.pixels) and method in scores.pixels and not all_patches
    rule_ = Threshold.parse(threshold) if threshold is not None else (PIXEL_THRESHOLD if pixel_level else PATCH_THRESHOLD)
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


__all__ = ["ChangeMap", "PATCH_THRESHOLD", "PIXEL_THRESHOLD", "change_map", "detect", "detect_in_index", "flag_changes", "open_pair"]

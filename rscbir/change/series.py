"""Change through a time series: *when* did each place change, from the stored vectors of an index of 2+ dates.

Every place (a patch position on the index's common grid) gets the cosine distance of its embeddings between each pair
of consecutive dates, each date's vectors centred on that date's mean first (what a whole date shares, its light or
season, is not change at any one place). A whole date that looks different (light, season, a new sensor) moves every place at once, so
each step's distances are scored against that step's own spread: the robust z-score (median, 1.4826 MAD of the step)
says how much more a place changed than the ground around it at the same time. A step is a change above ``cut``
(3 robust SD, the pixel maps' rule); each place reports the step it changed most in as an ISO 8601 interval
(``changed_between``), that step's score, the score of the whole span (first date to last) and how many steps changed.
No raster is read and no CNN runs.

The answer is only as good as the vectors' memory of ground: where one place's vectors differ as much between dates
as different places do (``median_step_distance`` in the summary; NAIP and Landsat indexes today: 0.3-0.6), real
change does not stand out and few places are flagged (issue 21: ground, not acquisition).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import geopandas as gpd
import numpy as np

from rscbir.change.pairs import cosine_distance
from rscbir.change.scores import robust_z
from rscbir.errors import OutsideCoverageError, QueryError

if TYPE_CHECKING:
    from rscbir.index.reader import Index

SERIES_CUT = 3.0  # robust SD above a step's median: the default cut of pixel change maps, applied per step
ACQUISITION_WARNING = 0.2  # median cosine distance of a place between two dates above which the vectors see acquisition


@dataclass
class SeriesChange:
    """Per place: ``places`` (EPSG:4326 footprints, row, col, ``changed_between``, ``step_score``, ``span_score``,
    ``changed_steps`` and the score of every step), the ``dates`` in order and a per-interval ``summary``."""

    places: gpd.GeoDataFrame
    dates: list[str]
    summary: dict


def series_change(index: Index, dates: Sequence[str] | None = None, cut: float = SERIES_CUT) -> SeriesChange:
    """When each place of an aligned index changed, over ``dates`` (default: every date of the index, earliest first)."""
    dates = sorted(dates or index.manifest.dates)
    if len(dates) < 2:
        raise QueryError(f"{index.path} holds {len(dates)} date(s): a time series of change needs two or more")
    records = index.scenes_on(dates)  # checks the grid and names a missing date
    dates = [r.date for r in records]
    frames = {r.scene_id: index.catalog[index.catalog["scene_id"] == r.scene_id].set_index(["row", "col"]) for r in records}
    places = sorted(set().union(*(f.index for f in frames.values())))
    where = {place: k for k, place in enumerate(places)}
    vectors = [_centred(_vectors(index, frames[r.scene_id], where, len(places))) for r in records]
    steps = np.stack([cosine_distance(a, b) for a, b in zip(vectors[:-1], vectors[1:])], axis=1)  # (places, steps)
    span = cosine_distance(_first(vectors), _last(vectors))
    z = _robust_z(np.log(np.clip(steps, 1e-6, None)))  # distances are positive and skewed: their logs are near-symmetric
    span_z = _robust_z(np.log(np.clip(span[:, None], 1e-6, None)))[:, 0]
    intervals = [f"{a}/{b}" for a, b in zip(dates[:-1], dates[1:])]
    best = np.nanargmax(np.where(np.isfinite(z), z, -np.inf), axis=1)
    changed = np.nan_to_num(z, nan=-np.inf) > cut
    frame = _footprints(frames, places)
    frame["changed_between"] = [intervals[k] if changed[i].any() else None for i, k in enumerate(best)]
    frame["step_score"] = z[np.arange(len(places)), best]
    frame["span_score"] = span_z
    frame["changed_steps"] = changed.sum(axis=1)
    for k, interval in enumerate(intervals):
        frame[f"score {interval}"] = z[:, k]
    summary = {"method": "cosine", "level": "series", "dates": dates, "threshold_rule": f"robust z per step > {cut:g}",
               "threshold": cut, "places": len(places), "changed_places": int(changed.any(axis=1).sum()),
               "changed_by_interval": {i: int((frame["changed_between"] == i).sum()) for i in intervals},
               "changed_in_interval": {i: int(changed[:, k].sum()) for k, i in enumerate(intervals)},
               "median_step_distance": {i: float(np.nanmedian(steps[:, k])) for k, i in enumerate(intervals)}}  # fmt: skip
    return SeriesChange(frame, dates, summary)


def place_history(found: SeriesChange, lon: float, lat: float) -> dict:
    """"When did this place change?": the place under (lon, lat) with its score at every step (robust z, ``None``
    where a date lacks the place), the step it changed most in and the cut, as JSON-ready values."""
    from shapely.geometry import Point

    under = found.places[found.places.contains(Point(lon, lat))]
    if under.empty:
        raise OutsideCoverageError(f"({lon:.6f}, {lat:.6f}) is outside every place of this time series")
    place = under.iloc[0]
    intervals = [f"{a}/{b}" for a, b in zip(found.dates[:-1], found.dates[1:])]
    scores = [_finite(place[f"score {i}"]) for i in intervals]
    return {"lon": lon, "lat": lat, "row": int(place["row"]), "col": int(place["col"]), "dates": found.dates,
            "intervals": intervals, "scores": scores, "cut": found.summary["threshold"],
            "changed_between": place["changed_between"], "changed_steps": int(place["changed_steps"]),
            "step_score": _finite(place["step_score"]), "span_score": _finite(place["span_score"]),
            "geometry": place.geometry.__geo_interface__}  # fmt: skip


def _finite(value) -> float | None:
    return float(value) if np.isfinite(value) else None


def _robust_z(distances: np.ndarray) -> np.ndarray:
    """Each column (a step) in robust SD units of that column: how much more a place changed than the rest then."""
    return np.stack([robust_z(column) for column in distances.T], axis=1)


def _vectors(index: Index, frame, where: dict, count: int) -> np.ndarray:
    out = np.full((count, index.vectors.shape[1]), np.nan, np.float32)
    rows = [where[place] for place in frame.index]
    out[rows] = np.asarray(index.vectors[frame["vector"].to_numpy()], dtype=np.float32)
    return out


def _centred(vectors: np.ndarray) -> np.ndarray:
    """A date's vectors less their mean, re-normalised: what the whole date shares (its light, season, sensor) goes."""
    centred = vectors - np.nanmean(vectors, axis=0)
    return centred / np.linalg.norm(centred, axis=1, keepdims=True).clip(1e-12)


def _first(vectors: list[np.ndarray]) -> np.ndarray:
    out = vectors[0].copy()
    for v in vectors[1:]:
        missing = np.isnan(out[:, 0])
        out[missing] = v[missing]
    return out


def _last(vectors: list[np.ndarray]) -> np.ndarray:
    return _first(vectors[::-1])


def _footprints(frames: dict, places: list) -> gpd.GeoDataFrame:
    geometry = {}
    for frame in frames.values():
        for place, shape in zip(frame.index, frame.geometry):
            geometry.setdefault(place, shape)
    return gpd.GeoDataFrame({"row": [p[0] for p in places], "col": [p[1] for p in places]},
                            geometry=[geometry[p] for p in places], crs="EPSG:4326")  # fmt: skip


__all__ = ["ACQUISITION_WARNING", "SERIES_CUT", "SeriesChange", "place_history", "series_change"]

"""Marks that say what counts as change: "changed here" / "not changed here", read from a vector file.

A user marks points or polygons (any CRS, a ``changed`` property of 1/0 or true/false) and runs again. A mark
answers for the *place* it lies on, as a click in an interactive segmentation tool selects an object
(:func:`mark_regions`): "not changed" on a flagged area clears that whole area; "changed" on unflagged ground
flags the connected ground around it that the score already leans toward. Then each mark corrects the score
around itself *in evidence space* (:func:`correct_with_marks`): pixels whose per-pixel evidence resembles a
marked place move toward the mark's answer, the others keep the score they had. A correction is a kernel
regression of what the map gets wrong at the marks, so marks the map already agrees with change nothing, one
mark of one class still works, and marks accumulate over rounds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
from rasterio import features
from scipy import ndimage

from rscbir.errors import RscbirError
from rscbir.grid import Grid

TRUE_WORDS, FALSE_WORDS = {"1", "true", "yes", "changed", "t", "y"}, {"0", "false", "no", "unchanged", "f", "n"}


class MarksError(RscbirError, ValueError):
    """A marks file that cannot teach this pair: unreadable, no CRS, no ``changed`` answer, or off the pair."""


@dataclass(frozen=True)
class Marks:
    """Marks on a grid: ``labels`` (H, W) int8, 1 changed, 0 not changed, -1 unmarked (conflicts unmarked)."""

    labels: np.ndarray
    count: int  # marks (features) read

    @property
    def changed(self) -> int:
        return int((self.labels == 1).sum())

    @property
    def unchanged(self) -> int:
        return int((self.labels == 0).sum())


def read_marks(path: str | os.PathLike, grid: Grid) -> Marks:
    """The marks of a vector file (GeoJSON, GeoPackage, ...) burnt onto ``grid``: a point marks its pixel,
    a polygon every pixel whose centre it covers (at least its own pixel). Raises :class:`MarksError`
    for a file without CRS or ``changed`` property, or with no mark on the pair's footprint."""
    return grid_marks(_read(path), grid, str(path))


def grid_marks(marks: gpd.GeoDataFrame, grid: Grid, source: str = "marks") -> Marks:
    """Marks (geometries with a 0/1 ``changed`` column, any CRS) burnt onto ``grid`` (see :func:`read_marks`)."""
    local = marks.to_crs(grid.crs)
    labels = np.full(grid.shape, -1, np.int8)
    seen = np.zeros(grid.shape, np.uint8)
    inside = 0
    for geometry, answer in zip(local.geometry, local["changed"].astype(int)):
        if geometry is None or geometry.is_empty:
            continue
        burnt = features.rasterize([(geometry, 1)], out_shape=grid.shape, transform=grid.transform, all_touched=geometry.geom_type.endswith("Point"))
        if not burnt.any():
            continue
        inside += 1
        both = (seen > 0) & (labels != answer)
        labels[burnt > 0] = answer
        labels[both & (burnt > 0)] = -1  # marked both ways: no answer
        seen |= burnt.astype(np.uint8)
    if not inside:
        bounds = ", ".join(f"{v:.6g}" for v in marks.total_bounds)
        raise MarksError(f"{source}: none of its {len(marks)} marks lies on the pair's footprint (marks span {bounds} in {marks.crs.to_string()})")
    return Marks(labels, inside)


def read_patch_marks(path: str | os.PathLike, patches: gpd.GeoDataFrame) -> np.ndarray:
    """The marks of a vector file on patches (``patches``: EPSG:4326 footprints, as an index's change scores hold),
    see :func:`patch_marks`. Raises :class:`MarksError` as :func:`read_marks` does."""
    return patch_marks(_read(path), patches, str(path))


def patch_marks(marks: gpd.GeoDataFrame, patches: gpd.GeoDataFrame, source: str = "marks") -> np.ndarray:
    """(n,) int8 per patch of ``patches``: 1 changed, 0 not changed, -1 unmarked (a patch marked both ways stays
    unmarked), from ``marks`` (geometries with a 0/1 ``changed`` column, any CRS). Raises :class:`MarksError` when no
    mark touches a patch."""
    answers = marks[["changed", "geometry"]].to_crs(patches.crs)
    hits = gpd.sjoin(patches[["geometry"]].reset_index(drop=True), answers, predicate="intersects", how="inner")
    if hits.empty:
        bounds = ", ".join(f"{v:.6g}" for v in marks.total_bounds)
        raise MarksError(f"{source}: none of its {len(marks)} marks lies on the pair's patches (marks span {bounds} in {marks.crs.to_string()})")
    labels = np.full(len(patches), -1, np.int8)
    answer = hits.groupby(level=0)["changed"].agg(lambda v: int(v.iloc[0]) if v.nunique() == 1 else -1)
    labels[answer.index.to_numpy()] = answer.to_numpy()
    return labels


def _read(path) -> gpd.GeoDataFrame:
    try:
        frame = gpd.read_file(path)
    except Exception as error:  # noqa: BLE001 - any reader failure is the user's file, said in one line
        raise MarksError(f"{path}: cannot read marks ({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
    if frame.crs is None:
        raise MarksError(f"{path}: the marks have no CRS; save them with one (GeoJSON is EPSG:4326 by definition)")
    if "changed" not in frame.columns:
        raise MarksError(f"{path}: no 'changed' property; give each mark changed: 1 (changed here) or 0 (not changed here)")
    answered = frame["changed"].notna() & (frame["changed"].astype(str).str.strip() != "")
    if not answered.any():
        raise MarksError(f"{path}: no mark in the file has a 'changed' answer (1 changed here, 0 not changed here)")
    frame = frame[answered]  # features without an answer (e.g. the areas of a downloaded change map) are not marks
    return frame.assign(changed=[_answer(value, path, k) for k, value in enumerate(frame["changed"])])


def _answer(value, path, k) -> int:
    if isinstance(value, (bool, int, float, np.number)) and float(value) in (0.0, 1.0):  # 1.0 when other rows lack one
        return int(value)
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return 1
    if text in FALSE_WORDS:
        return 0
    raise MarksError(f"{path}: mark {k} has changed={value!r}; use 1/0 or true/false")


def marks_geojson(labels: np.ndarray, grid: Grid) -> dict:
    """Marked pixels as GeoJSON points (EPSG:4326, a ``changed`` property each), e.g. simulated clicks."""
    rows, cols = np.nonzero(labels >= 0)
    xs, ys = (np.asarray(v) for v in zip(*[grid.transform * (c + 0.5, r + 0.5) for r, c in zip(rows, cols)])) if len(rows) else ([], [])
    points = gpd.GeoDataFrame({"changed": labels[rows, cols].astype(int)}, geometry=gpd.points_from_xy(xs, ys), crs=grid.crs).to_crs("EPSG:4326")
    return points.__geo_interface__


# ------------------------------------------------------------------ the correction
@dataclass(frozen=True)
class MarkRule:
    """How far a mark reaches and how hard it pulls. ``bandwidth`` is the kernel width in standardised
    evidence units (chosen on the OSCD design cities), ``margin`` the logit a marked place is pulled to."""

    bandwidth: float = 1.0
    reach: float | None = 8.0  # spatial kernel width (pixels or patches); None: a mark reaches the whole pair
    margin: float = 2.0
    ridge: float = 0.01
    components: int = 16  # evidence is compared after a PCA to this many components (fitted on the pair)
    regions: bool = True  # a mark answers for its place (mark_regions) before the evidence-space correction
    # chosen on the OSCD design cities (results.md): lean 1.5 / 2 / 2.5 / 3, grow 12 / 24 / 48, least 2 / 3
    lean: float = 2.5  # a "changed" mark grows over connected pixels whose logit is above -lean (toward change)
    grow: int = 24  # ... within this many pixels of the mark
    least: int = 3  # ... and flags at least a disc of this radius (a place, not a pixel the minimum area drops)


def mark_regions(logit: np.ndarray, valid: np.ndarray, labels: np.ndarray, rule: MarkRule = MarkRule()) -> np.ndarray:
    """The logit (H, W; > 0 changed) after each mark has answered for its place: every changed area (connected
    pixels above 0) holding a "not changed" mark and no "changed" one is pushed to ``-margin``; around each
    "changed" mark the connected pixels above ``-lean`` within ``grow`` px (at least a disc of ``least`` px)
    are pulled to ``+margin``."""
    out = logit.astype(np.float32).copy()
    changed = valid & (np.nan_to_num(logit, nan=-np.inf) > 0)
    areas, _ = ndimage.label(changed)
    kept = set(np.unique(areas[labels == 1]).tolist())
    cleared = np.isin(areas, sorted(set(np.unique(areas[labels == 0]).tolist()) - kept - {0}))
    out[cleared] = np.minimum(out[cleared], -rule.margin)
    leaning = valid & (np.nan_to_num(logit, nan=-np.inf) > -rule.lean) & ~cleared
    for r, c in np.argwhere((labels == 1) & valid & ~changed):
        height, width = valid.shape
        rows = slice(max(r - rule.grow, 0), min(r + rule.grow + 1, height))
        cols = slice(max(c - rule.grow, 0), min(c + rule.grow + 1, width))
        yy, xx = np.ogrid[rows, cols]
        distance2 = (yy - r) ** 2 + (xx - c) ** 2
        around = leaning[rows, cols] & (distance2 <= rule.grow**2) | (distance2 <= rule.least**2) & valid[rows, cols]
        parts, _ = ndimage.label(around)
        place = parts == parts[r - rows.start, c - cols.start]
        window = out[rows, cols]
        window[place] = np.maximum(window[place], rule.margin)
    return out


def evidence_space(evidence: np.ndarray, components: int, seed: int = 0) -> np.ndarray:
    """(n, components) whitened principal components of (n, C) evidence: distances in it are in units of
    the pair's own spread, so one bandwidth fits every pair. Standardisation and components come from a sample
    of 20,000 rows; the whole evidence goes through one matrix product."""
    rng = np.random.default_rng(seed)
    sample = evidence[np.sort(rng.choice(len(evidence), min(len(evidence), 20000), replace=False))].astype(np.float64)
    mean, std = sample.mean(axis=0), sample.std(axis=0) + 1e-6
    variances, vectors = np.linalg.eigh(np.cov((sample - mean) / std, rowvar=False))  # ascending: the last are the largest
    k = min(components, len(variances))
    variances, vectors = variances[::-1][:k], vectors[:, ::-1][:, :k]
    projection = (vectors / std[:, None] / np.sqrt(np.where(variances > 1e-12, variances, 1.0))).astype(np.float32)
    return evidence.astype(np.float32, copy=False) @ projection - (mean.astype(np.float32) @ projection)


def correct_with_marks(logit: np.ndarray, space: np.ndarray, marked: np.ndarray, answers: np.ndarray,
                       rule: MarkRule = MarkRule(), positions: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """The change logit (> 0: changed) after the marks: ``logit`` (n,) plus a kernel regression, over the
    evidence ``space`` (n, d), of what it gets wrong at the ``marked`` rows (``answers`` 1/0). A mark the
    logit already agrees with by ``margin`` or more asks for nothing. With ``positions`` (n, 2) and a
    ``rule.reach``, a mark also fades with distance on the ground: it answers for its own surroundings."""
    if not len(marked):
        return logit.astype(np.float32)
    target = np.where(answers > 0, rule.margin, -rule.margin)
    here = logit[marked]
    wanted = np.where(answers > 0, np.maximum(target - here, 0), np.minimum(target - here, 0))
    centres = space[marked]
    near = positions is not None and rule.reach is not None
    gram = _kernel(centres, centres, rule.bandwidth)
    if near:
        gram *= _kernel(positions[marked], positions[marked], rule.reach)
    weights = np.linalg.solve(gram + rule.ridge * np.eye(len(marked)), wanted)
    out = logit.astype(np.float32).copy()
    for start in range(0, len(space), 65536):
        block = slice(start, start + 65536)
        k = _kernel(space[block], centres, rule.bandwidth)
        if near:
            k *= _kernel(positions[block], positions[marked], rule.reach)
        out[block] += k @ weights
    return out


def _kernel(a: np.ndarray, b: np.ndarray, bandwidth: float) -> np.ndarray:
    a, b = a.astype(np.float32), b.astype(np.float32)
    d2 = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T
    return np.exp(-np.maximum(d2, 0) / (2 * bandwidth**2)).astype(np.float32)


__all__ = ["MarkRule", "Marks", "MarksError", "correct_with_marks", "evidence_space", "grid_marks", "mark_regions", "marks_geojson", "patch_marks", "read_marks", "read_patch_marks"]

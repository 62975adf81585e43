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

Changed patches are those above a threshold chosen without labels: Otsu's
method on the scores of the pair (default), a percentile, mean + k sigma, or a
fixed number.
"""

from __future__ import annotations

import enum
import logging
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import geopandas as gpd
import numpy as np
import shapely
import torch
import torch.nn.functional as F
from pyproj import Geod
from rasterio.enums import Resampling

from rscbir.catalog import records_to_frame
from rscbir.errors import BandError, RscbirError
from rscbir.grid import Grid
from rscbir.models.features import FeatureModel
from rscbir.scene import Scene
from rscbir.tiling import PatchRecord, TilingConfig, aligned_grid, iter_patches

log = logging.getLogger(__name__)


class ChangeMethod(str, enum.Enum):
    COSINE = "cosine"
    MULTILAYER = "multilayer"
    DENSE = "dense"
    CVA = "cva"
    FUSION = "fusion"


# ------------------------------------------------------------------ thresholds
def otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut maximising between-class variance of a 1-D sample."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) < 2 or values.max() - values.min() < 1e-6:
        # no spread (identical dates give float noise around 0): nothing is above the cut
        return float(values.max()) if len(values) else math.inf
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist)
    weight_above = weight[-1] - weight
    mean_below = np.cumsum(hist * centres) / np.maximum(weight, 1)
    total = (hist * centres).sum()
    mean_above = (total - np.cumsum(hist * centres)) / np.maximum(weight_above, 1)
    between = weight * weight_above * (mean_below - mean_above) ** 2
    return float(edges[1:][np.argmax(between)])


def threshold_value(scores: np.ndarray, rule: str | float) -> float:
    """The score above which a patch counts as changed.

    ``rule``: ``otsu``, ``percentile:95``, ``sigma:3`` (mean + 3 std) or a number.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if isinstance(rule, (int, float)):
        return float(rule)
    name, _, arg = str(rule).strip().partition(":")
    try:
        if name == "otsu":
            return otsu(scores)
        if name == "percentile":
            return float(np.percentile(scores, float(arg or 95)))
        if name == "sigma":
            return float(scores.mean() + float(arg or 3) * scores.std())
        return float(rule)
    except ValueError:
        raise RscbirError(f"unknown threshold {rule!r}; use otsu, percentile:95, sigma:3 or a number") from None


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


def band_moments(scene: Scene, tiling: TilingConfig, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std of the scene's valid pixels on ``grid`` (streamed)."""
    total = total_sq = None
    count = 0
    for patch in iter_patches(scene, tiling, grid):
        data = patch.data.reshape(patch.data.shape[0], -1).astype(np.float64)
        if total is None:
            total, total_sq = np.zeros(len(data)), np.zeros(len(data))
        total += data.sum(axis=1)
        total_sq += (data**2).sum(axis=1)
        count += data.shape[1]
    if not count:
        raise RscbirError(f"{scene.scene_id}: no valid patch on the common grid")
    mean = total / count
    return mean, np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))


# ---------------------------------------------------------------- CNN stages
def stage_maps(model: FeatureModel, x: torch.Tensor) -> list[torch.Tensor]:
    """Feature maps (N, C_i, h_i, w_i) after every trunk stage, for scaled bands ``x``."""
    from rscbir.models.finetune import trunk_stages

    h = model.prepare(x)
    maps = []
    for stage in trunk_stages(model):
        h = stage(h)
        if h.ndim == 4 and not isinstance(stage, torch.nn.BatchNorm2d):
            maps.append(h)
    # in timm the last conv is followed by BatchNorm+activation (bn2): use that output
    maps[-1] = h
    return maps


def stage_features(model: FeatureModel, x: torch.Tensor) -> list[torch.Tensor]:
    """Global-average-pooled outputs of every trunk stage (N, C_i)."""
    return [m.mean(dim=(2, 3)) for m in stage_maps(model, x)]


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
    spectral_before, spectral_after = spectral or (before, after)
    mb, sb = band_moments(spectral_before, tiling, grid)
    ma, sa = band_moments(spectral_after, tiling, grid)
    cva_scores = {}
    maps = {name: PixelMosaic(grid) for name in ("cva", "dense")} if pixel_maps else {}
    for pairs in paired_patches(spectral_before, spectral_after, tiling, grid, batch=256):
        zb = (pairs.before - mb[None, :, None, None]) / sb[None, :, None, None]
        za = (pairs.after - ma[None, :, None, None]) / sa[None, :, None, None]
        per_pixel = np.sqrt(((za - zb) ** 2).sum(axis=1))
        magnitude = per_pixel.mean(axis=(1, 2))
        cva_scores.update({(r.row, r.col): float(m) for r, m in zip(pairs.records, magnitude)})
        if pixel_maps:
            maps["cva"].add(pairs.records, per_pixel)

    records, cnn = [], {"cosine": [], "multilayer": [], "dense": []}
    if model is not None:
        model.eval()
        for pairs in paired_patches(before, after, tiling, grid, batch=batch):
            distances = cnn_distances(model, pairs.before, pairs.after, before.scale, after.scale, pixel_maps)
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
    median = np.nanmedian(values)
    mad = 1.4826 * np.nanmedian(np.abs(values - median))
    # below 1e-6 the spread is float noise, not evidence: keep the original units rather than blow it up
    return (values - median) / (mad if mad > 1e-6 else 1.0)


# ------------------------------------------------------------------- outputs
_GEOD = Geod(ellps="WGS84")


def changed_areas(scores: ChangeScores, method: ChangeMethod | str, threshold: float) -> gpd.GeoDataFrame:
    """Adjacent changed patches dissolved into polygons (EPSG:4326) with max/mean score,
    area in m², patch count and both dates."""
    method = ChangeMethod(method).value
    patches = scores.patches
    changed = patches[patches[method] > threshold]
    columns = ["max_score", "mean_score", "area_m2", "patches", "date_before", "date_after", "geometry"]
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
        rows.append((float(values.max()), float(values.mean()), part, len(members)))
    local = gpd.GeoSeries([r[2] for r in rows], crs=scores.grid.crs)
    geographic = local.to_crs("EPSG:4326")
    areas = [abs(_GEOD.geometry_area_perimeter(g)[0]) for g in geographic]
    frame = gpd.GeoDataFrame(
        {
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
    return frame.sort_values("max_score", ascending=False, ignore_index=True)


def score_raster(scores: ChangeScores, method: ChangeMethod | str, path) -> None:
    """Write the scores as a float32 GeoTIFF on the common grid.

    With per-pixel maps (``--dense``) the raster has the grid's own pixels;
    otherwise one cell per patch stride. NaN (the nodata value) marks pixels or
    cells with no patch.
    """
    import rasterio
    from affine import Affine

    from rscbir.atomic import atomic_path

    method = ChangeMethod(method).value
    patches = scores.patches
    if scores.pixels and method in scores.pixels:
        data = scores.pixels[method]
        height, width = data.shape
        transform = scores.grid.transform
    else:
        size, stride = scores.tiling.pixels(scores.grid)
        height = int(patches["row"].max()) + 1 if len(patches) else 1
        width = int(patches["col"].max()) + 1 if len(patches) else 1
        data = np.full((height, width), np.nan, dtype=np.float32)
        data[patches["row"].to_numpy(), patches["col"].to_numpy()] = patches[method].to_numpy()
        # a cell is the stride step; shifted so cell centres sit on patch centres
        offset = (size - stride) / 2
        transform = scores.grid.transform * Affine.translation(offset, offset) * Affine.scale(stride)
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", driver="GTiff", width=width, height=height, count=1, dtype="float32",
                           crs=scores.grid.crs, transform=transform, nodata=float("nan"), compress="deflate") as dst:  # fmt: skip
            dst.write(data, 1)
            dst.set_band_description(1, f"{method} change score")
            dst.update_tags(method=method, date_before=str(patches["date_before"].iloc[0]), date_after=str(patches["date_after"].iloc[0]))


# ------------------------------------------------------------- index-backed change
def _index_scenes(index, dates: Sequence[str]) -> list[dict]:
    from rscbir.errors import QueryError
    from rscbir.query import normalise_date

    if not index.manifest.get("grid"):
        raise QueryError(f"{index.path} was not indexed with --align; change needs both dates on one grid")
    records = []
    for date in dates:
        wanted = normalise_date(date)
        found = [s for s in index.manifest["scenes"] if s.get("date") == wanted]
        if not found:
            have = sorted({s.get("date") or "undated" for s in index.manifest["scenes"]})
            raise QueryError(f"no scene of date {wanted} in {index.path}; dates indexed: {', '.join(have)}")
        records.append(found[0])
    return records


def co_located_vectors(index, before_id: str, after_id: str):
    """Catalog rows and stored vectors of the patches indexed in both scenes at the same (row, col).

    Returns (before rows, after rows, before vectors, after vectors), row-aligned.
    """
    a, b = (index.catalog[index.catalog["scene_id"] == s].set_index(["row", "col"]) for s in (before_id, after_id))
    common = a.index.intersection(b.index)
    rows_a = gpd.GeoDataFrame(a.loc[common].reset_index(), geometry="geometry", crs="EPSG:4326")
    rows_b = gpd.GeoDataFrame(b.loc[common].reset_index(), geometry="geometry", crs="EPSG:4326")
    va = np.asarray(index.vectors[rows_a["vector"].to_numpy()], dtype=np.float32)
    vb = np.asarray(index.vectors[rows_b["vector"].to_numpy()], dtype=np.float32)
    return rows_a, rows_b, va, vb


def scores_from_index(index, dates: Sequence[str], method: ChangeMethod | str = ChangeMethod.FUSION) -> ChangeScores:
    """Change scores between two dates of an aligned index; ``cosine`` reuses the stored vectors."""
    from rscbir.models.load import model_from_config

    before_doc, after_doc = _index_scenes(index, dates)
    grid = Grid.from_dict(index.manifest["grid"])
    tiling = TilingConfig(**{k: v for k, v in index.manifest["tiling"].items()})
    before, after = Scene.from_dict(before_doc), Scene.from_dict(after_doc)
    if ChangeMethod(method) is ChangeMethod.COSINE:
        frame, _, va, vb = co_located_vectors(index, before_doc["scene_id"], after_doc["scene_id"])
        frame["cosine"] = 1 - np.sum(va * vb, axis=1)
        frame["date_before"], frame["date_after"] = before_doc["date"], after_doc["date"]
        return ChangeScores(frame, grid, tiling, before, after)
    return score_change(before, after, model_from_config(index.model_config), tiling, grid)


def change_vectors(index, dates: Sequence[str]) -> tuple[gpd.GeoDataFrame, np.ndarray, np.ndarray]:
    """For each (row, col) indexed at both dates: the after-date catalog row, the normalised
    difference vector (after - before) and the change magnitude (1 - cosine)."""
    before_doc, after_doc = _index_scenes(index, dates)
    _, frame, va, vb = co_located_vectors(index, before_doc["scene_id"], after_doc["scene_id"])
    difference = vb - va
    norms = np.linalg.norm(difference, axis=1, keepdims=True)
    return frame, difference / np.maximum(norms, 1e-12), 1 - np.sum(va * vb, axis=1)


def query_change(index, lon: float, lat: float, dates: Sequence[str], k: int = 10, all_pairs: bool = False,
                 threshold: str | float = "otsu", exclude_radius: float | None = None):  # fmt: skip
    """Places whose change between ``dates`` is most like the change at (lon, lat).

    The example is the normalised difference of the two embeddings of the patch
    under the point; candidates are the patches whose change magnitude passes
    ``threshold`` (all pairs with ``all_pairs``), ranked by cosine similarity of
    their difference vectors, so new construction finds other new construction
    rather than every change.
    """
    from rscbir.errors import QueryError
    from rscbir.query import QueryResult, _centres

    frame, directions, magnitude = change_vectors(index, dates)
    point = shapely.Point(lon, lat)
    covering = np.flatnonzero(frame.geometry.covers(point).to_numpy())
    if len(covering) == 0:
        raise QueryError(f"point ({lon:.6f}, {lat:.6f}) is not covered by a patch indexed at both dates {', '.join(dates)}")
    example = int(covering[0])
    candidates = np.ones(len(frame), bool) if all_pairs else magnitude > threshold_value(magnitude, threshold)
    candidates[example] = False
    if exclude_radius:
        centres = _centres(frame)
        _, _, metres = _GEOD.inv(np.full(len(frame), lon), np.full(len(frame), lat), centres[:, 0], centres[:, 1])
        candidates &= metres > exclude_radius
    similarity = directions @ directions[example]
    order = [i for i in np.argsort(-similarity) if candidates[i]][:k]
    hits = gpd.GeoDataFrame(
        {
            "rank": np.arange(1, len(order) + 1),
            "score": similarity[order].astype(float),
            "change_magnitude": magnitude[order].astype(float),
            "patch_id": frame["patch_id"].to_numpy()[order],
            "scene_id": frame["scene_id"].to_numpy()[order],
            "date": [f"{dates[0]}/{dates[1]}"] * len(order),
            "row": frame["row"].to_numpy()[order],
            "col": frame["col"].to_numpy()[order],
        },
        geometry=frame.geometry.to_numpy()[order],
        crs="EPSG:4326",
    )
    query = {"type": "change", "lon": lon, "lat": lat, "dates": list(dates), "patch_id": frame["patch_id"].iloc[example],
             "change_magnitude": float(magnitude[example]), "k": k}  # fmt: skip
    return QueryResult(hits, query, frame.iloc[[example]])


def preview(scores: ChangeScores, method: ChangeMethod | str, threshold: float, path, max_side: int = 800) -> None:
    """PNG: before | after | score heat map, changed patches outlined."""
    import io

    from affine import Affine
    from PIL import Image, ImageDraw
    from rasterio.windows import Window

    from rscbir.atomic import atomic_path

    method = ChangeMethod(method).value
    grid = scores.grid
    factor = max(1.0, max(grid.width, grid.height) / max_side)
    view = Grid(grid.crs, grid.transform * Affine.scale(factor), int(grid.width / factor), int(grid.height / factor))

    def rgb(scene: Scene) -> np.ndarray:
        names = scene.band_names
        picks = [names.index(b) for b in ("B04", "B03", "B02") if b in names] or [0, 1, 2][: min(3, scene.count)]
        picks = (picks * 3)[:3]
        with scene.reader(view) as reader:
            data = scene.scale(reader.read(Window(0, 0, view.width, view.height))[picks])
        return (np.clip(np.moveaxis(data, 0, -1), 0, 1) * 255).astype(np.uint8)

    size, stride = scores.tiling.pixels(grid)
    heat = np.zeros((view.height, view.width), np.float32)
    values = scores.patches[method].to_numpy()
    low, high = np.nanpercentile(values, [2, 98]) if len(values) else (0, 1)
    boxes = []
    for r, c, v in zip(scores.patches["row_off"], scores.patches["col_off"], values):
        y0, x0 = int(r / factor), int(c / factor)
        y1, x1 = int((r + size) / factor), int((c + size) / factor)
        heat[y0:y1, x0:x1] = np.clip((v - low) / max(high - low, 1e-9), 0, 1)
        if v > threshold:
            boxes.append((x0, y0, x1, y1))
    colour = np.stack([heat * 255, heat * 120, (1 - heat) * 60], axis=-1).astype(np.uint8)
    panels = [Image.fromarray(rgb(scores.before)), Image.fromarray(rgb(scores.after)), Image.fromarray(colour)]
    sheet = Image.new("RGB", (3 * view.width + 20, view.height + 20), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (panel, caption) in enumerate(zip(panels, [str(scores.patches["date_before"].iloc[0]), str(scores.patches["date_after"].iloc[0]), f"{method} score"])):
        x = 5 + i * (view.width + 5)
        sheet.paste(panel, (x, 15))
        draw.text((x, 2), caption, fill=(0, 0, 0))
        for x0, y0, x1, y1 in boxes:
            draw.rectangle([x + x0, 15 + y0, x + x1 - 1, 15 + y1 - 1], outline=(255, 255, 0), width=1)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())

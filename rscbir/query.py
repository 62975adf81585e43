"""Queries against an index: by point, by example image, by patch; filters; ranked results.

A point query takes the indexed patch covering the point as the example; an
image query embeds the chip exactly as the index embedded its patches (same
model, bands, scaling, input size, PCA). Results come back ranked by cosine
similarity as a GeoDataFrame in EPSG:4326. :func:`query_change` ranks places
by the direction of their embedding change between two dates.

Examples
--------
>>> from rscbir.index import Index
>>> from rscbir.query import query_point
>>> result = query_point(Index.open("out/naip_index"), -99.06, 47.02, k=10, filters=Filters(exclude_radius=500))
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from pyproj import Transformer
from rasterio.errors import RasterioError

from rscbir.catalog import metres_from
from rscbir.change.pairs import indexed_pair
from rscbir.errors import FeedbackError, OutsideCoverageError, QueryError
from rscbir.index import Index
from rscbir.rerank import QueryExpansion, feedback_vector
from rscbir.scene import Scaling, apply_scaling, normalise_date
from rscbir.thresholds import Threshold
from rscbir import validate



@dataclass(frozen=True)
class Filters:
    """Which indexed patches may be returned."""

    bbox: tuple[float, float, float, float] | None = None  # lon/lat: west, south, east, north
    dates: tuple[str, ...] = ()
    scenes: tuple[str, ...] = ()
    exclude_radius: float | None = None  # metres around the query patch centre

    def __post_init__(self) -> None:
        if self.bbox is not None:
            object.__setattr__(self, "bbox", validate.bbox(self.bbox))
        object.__setattr__(self, "dates", validate.dates(self.dates))
        if self.exclude_radius is not None and not validate.finite(self.exclude_radius, "exclude radius") >= 0:
            raise QueryError(f"exclude radius must be >= 0 metres, not {self.exclude_radius}")

    def mask(self, index: Index, centre: tuple[float, float] | None) -> np.ndarray | None:
        """Bool mask over the index's ids, None when every patch may be returned; from the segments' lookups,
        so a box, a date or a radius reads only the patches it names."""
        keep = None  # masks start from zeros (pages the kernel maps lazily) and only touch the ids they allow

        def narrow(mask: np.ndarray) -> None:
            nonlocal keep
            keep = mask if keep is None else keep & mask

        if self.bbox is not None:
            inside = np.zeros(len(index), dtype=bool)
            inside[index.in_box(self.bbox)] = True
            narrow(inside)
        if self.dates:
            wanted = {normalise_date(d) for d in self.dates}
            known = {s.date for s in index.manifest.scenes} - {None}
            if not wanted & known:
                raise QueryError(f"no indexed patch has date {', '.join(sorted(wanted))}; the index holds {', '.join(sorted(known)) or 'no dates'}")
            narrow(index.scene_mask([s.scene_id for s in index.manifest.scenes if s.date in wanted]))
        if self.scenes:
            indexed = {s.scene_id: s.date for s in index.manifest.scenes}
            unknown = set(self.scenes) - set(indexed)
            if unknown:
                raise QueryError(f"unknown scene {', '.join(sorted(unknown))}; indexed scenes: {', '.join(sorted(indexed))}")
            if self.dates and not {indexed[s] for s in self.scenes} & set(self.dates):
                raise QueryError(f"no scene of {', '.join(self.scenes)} has date {', '.join(self.dates)}: "
                                 "--date and --scene together keep only patches that match both")  # fmt: skip
            narrow(index.scene_mask(self.scenes))
        if self.exclude_radius and centre is not None:
            near = index.within(*centre, self.exclude_radius)
            if len(near):
                if keep is None:
                    keep = np.ones(len(index), dtype=bool)
                keep[near] = False
        return keep


@dataclass
class QueryResult:
    """Ranked hits and what was asked."""

    hits: gpd.GeoDataFrame  # rank, score, patch_id, scene_id, date, row, col, geometry (EPSG:4326)
    query: dict = field(default_factory=dict)
    query_patch: gpd.GeoDataFrame | None = None  # the example patch, for point / patch queries
    marks: gpd.GeoDataFrame | None = None  # patches marked right (label 1) or wrong (label 0), not counted as hits


def patch_at(index: Index, lon: float, lat: float, date: str | None = None) -> int:
    """Row of the indexed patch covering (lon, lat): on ``date`` if given, else the latest date.

    Among overlapping patches (stride < patch size) the one whose centre is nearest wins.
    """
    covering = index.covering(lon, lat)
    if len(covering) == 0:
        west, south, east, north = index.bounds
        raise OutsideCoverageError(
            f"point ({lon:.6f}, {lat:.6f}) lies outside every indexed patch; the index covers "
            f"lon {west:.4f}..{east:.4f}, lat {south:.4f}..{north:.4f}"
        )
    dates = index.patches(covering)["date"].to_numpy()
    if date is not None:
        wanted = normalise_date(date)
        covering = covering[dates == wanted]
        if len(covering) == 0:
            raise OutsideCoverageError(f"no patch of date {wanted} covers ({lon:.6f}, {lat:.6f}); dates there: {', '.join(sorted(set(dates.astype(str))))}")
    else:
        valid = np.array([d is not None for d in dates])
        if valid.any():
            latest = max(d for d in dates if d is not None)
            covering = covering[dates == latest]
    centres = index.centres(covering)
    return int(covering[np.argmin((centres[:, 0] - lon) ** 2 + (centres[:, 1] - lat) ** 2)])


@dataclass(frozen=True)
class Feedback:
    """Patches a user marked right (positives) or wrong (negatives), by id; rounds accumulate with :meth:`add`."""

    positives: tuple[str, ...] = ()
    negatives: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "positives", tuple(dict.fromkeys(self.positives)))
        object.__setattr__(self, "negatives", tuple(dict.fromkeys(self.negatives)))
        both = sorted(set(self.positives) & set(self.negatives))
        if both:
            raise FeedbackError(f"patch {', '.join(both[:5])} is marked both right and wrong; keep one mark per patch")
        if self.negatives and not self.positives:
            raise FeedbackError("feedback with only negatives: mark at least one patch right (--positive) as well")

    def __bool__(self) -> bool:
        return bool(self.positives or self.negatives)

    def add(self, positives: Sequence[str] = (), negatives: Sequence[str] = ()) -> "Feedback":
        """This feedback plus another round of marks (a later mark of the same patch wins)."""
        positives, negatives = tuple(positives), tuple(negatives)  # a patch in both is refused by __post_init__
        keep_pos = tuple(p for p in self.positives if p not in negatives) + positives
        keep_neg = tuple(n for n in self.negatives if n not in positives) + negatives
        return Feedback(keep_pos, keep_neg)

    def rows(self, index: Index) -> tuple[np.ndarray, np.ndarray]:
        """Catalog rows of the marked patches; unknown ids are a :class:`FeedbackError`."""
        positives, negatives = index.rows_of(self.positives), index.rows_of(self.negatives)
        unknown = [p for p, r in zip((*self.positives, *self.negatives), (*positives, *negatives)) if r < 0]
        if unknown:
            raise FeedbackError(f"feedback names patches not in {index.path}: {', '.join(unknown[:5])}")
        return positives, negatives


def read_feedback(path: str | os.PathLike, index: Index) -> Feedback:
    """Marks from a file: GeoJSON or CSV rows with a ``label`` of 1 (right) or 0 (wrong) and either a
    ``patch_id`` or a location (GeoJSON geometry, or ``lon``/``lat`` columns), e.g. a previous
    query's output (which lists the marks it used) with labels filled in. Rows with no label are ignored."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".csv":
            table = pd.read_csv(path)
        else:
            table = gpd.read_file(path)
    except Exception as exc:  # pandas and pyogrio raise their own types for unreadable files
        raise FeedbackError(f"{path}: not a readable CSV or GeoJSON file ({exc})") from None
    if "label" not in table.columns:
        raise FeedbackError(f"{path}: no `label` column; mark each row 1 (right) or 0 (wrong)")
    blank = table["label"].isna() | (table["label"].astype(str).str.strip() == "")
    table = table[~blank.to_numpy()]  # rows the user left unmarked
    labels = pd.to_numeric(table["label"], errors="coerce")
    if not labels.isin([0, 1]).all():
        bad = table["label"][~labels.isin([0, 1]).to_numpy()].iloc[0]
        raise FeedbackError(f"{path}: `label` {bad!r}: mark a row 1 (right) or 0 (wrong), or leave it empty")
    if table.empty:
        return Feedback()
    if "patch_id" in table.columns and table["patch_id"].notna().all():
        ids = table["patch_id"].astype(str).tolist()
    elif {"lon", "lat"} <= set(table.columns):
        ids = list(index.patches([patch_at(index, lon, lat) for lon, lat in zip(table["lon"], table["lat"])])["patch_id"])
    elif isinstance(table, gpd.GeoDataFrame) and table.geometry.notna().all():
        points = table.geometry.to_crs("EPSG:4326").representative_point()
        ids = list(index.patches([patch_at(index, p.x, p.y) for p in points])["patch_id"])
    else:
        raise FeedbackError(f"{path}: rows need a `patch_id`, `lon`/`lat` columns or a geometry")
    return Feedback(tuple(i for i, label in zip(ids, labels) if label == 1), tuple(i for i, label in zip(ids, labels) if label == 0))


def query_vector(index: Index, vector: np.ndarray, expansion: QueryExpansion = QueryExpansion(), feedback: Feedback | None = None,
                 exclude_row: int | None = None) -> np.ndarray:  # fmt: skip
    """The vector the final search ranks by: the query expanded by its neighbours (alpha-QE, one extra
    FAISS search), or, with feedback, the Rocchio direction of the query and the marked patches."""
    vector = np.asarray(vector, dtype=np.float32).reshape(1, -1)
    if feedback:
        positives, negatives = feedback.rows(index)
        marked_right, marked_wrong = index.vector_rows(positives), index.vector_rows(negatives)
        return feedback_vector(np.vstack([vector, marked_right]), marked_wrong)[None]
    if not expansion.enabled or len(index) < 2:
        return vector
    scores, ids = index.search(vector, expansion.k + 1)
    keep = ids[0] >= 0
    if exclude_row is not None:
        keep &= ids[0] != exclude_row  # the query patch itself is not its own neighbour
    ids, scores = ids[0][keep][: expansion.k], scores[0][keep][: expansion.k]
    neighbours = index.vector_rows(ids, search=True)
    return expansion.expand(vector, neighbours[None], scores[None])


def _rank(index: Index, vector: np.ndarray, k: int, filters: Filters, centre, exclude_row: int | None = None,
          expansion: QueryExpansion = QueryExpansion(), feedback: Feedback | None = None,
          places: bool = True) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:  # fmt: skip
    """(new answers, marked patches): the ``k`` best patches not already marked, one per ground place with
    ``places``; the marked patches come back apart, each with its ``label``."""
    allowed = filters.mask(index, centre)
    if exclude_row is not None and filters.exclude_radius:
        allowed = np.ones(len(index), bool) if allowed is None else allowed
        allowed[exclude_row] = False
    marked_rows = np.concatenate(feedback.rows(index)) if feedback else np.zeros(0, np.int64)
    if len(marked_rows):  # patches marked right or wrong are not new answers
        allowed = np.ones(len(index), bool) if allowed is None else allowed
        allowed[marked_rows] = False
    search_vector = query_vector(index, vector, expansion, feedback, exclude_row)
    marks = _marks(index, search_vector, feedback) if feedback else _empty_hits(index)
    dates = len({s.date or s.scene_id for s in index.manifest.scenes})
    fetch = k * dates if places and dates > 1 else k
    most = min(len(index), max(fetch * 16, 4096))  # a bound on the widening: a query never reads the whole index
    while True:
        scores, ids = index.search(search_vector, min(fetch, len(index)), allowed)
        keep = ids[0] >= 0
        hits = index.patches(ids[0][keep])  # the hits' rows from the segments' lookups, not the catalog
        hits.insert(0, "score", scores[0][keep].astype(float))
        if places and dates > 1:
            hits = distinct_places(hits, marks)
        if len(hits) >= k or fetch >= most:
            break
        fetch = min(fetch * 4, most)
    hits = hits.iloc[:k].reset_index(drop=True)
    if "dates" not in hits.columns:
        hits = own_place(hits)
    hits.insert(0, "rank", np.arange(1, len(hits) + 1))
    return hits, marks


def distinct_places(hits: gpd.GeoDataFrame, occupied: gpd.GeoDataFrame | None = None) -> gpd.GeoDataFrame:
    """One hit per ground place, best score first: a hit whose centre lies within half a patch of a better hit's
    centre is that place on another date, listed in the better hit's ``dates`` and ``matched_patches``. Hits at the
    place of an ``occupied`` patch (one the user marked) are dropped."""
    bounds = hits.geometry.bounds.to_numpy() if len(hits) else np.zeros((0, 4))
    centres = np.column_stack([(bounds[:, 0] + bounds[:, 2]) / 2, (bounds[:, 1] + bounds[:, 3]) / 2])
    halves = np.column_stack([(bounds[:, 2] - bounds[:, 0]) / 2, (bounds[:, 3] - bounds[:, 1]) / 2])
    taken = []
    if occupied is not None and len(occupied):
        ob = occupied.geometry.bounds.to_numpy()
        taken = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, (b[2] - b[0]) / 2, (b[3] - b[1]) / 2, None) for b in ob]
    groups: list[list[int]] = []
    for i, ((x, y), (hx, hy)) in enumerate(zip(centres, halves)):
        for tx, ty, thx, thy, group in taken:
            if abs(x - tx) < thx and abs(y - ty) < thy:
                if group is not None:
                    groups[group].append(i)
                break
        else:
            taken.append((x, y, hx, hy, len(groups)))
            groups.append([i])
    best = hits.iloc[[g[0] for g in groups]].copy() if groups else hits.iloc[:0].copy()
    dates, patch_ids = hits["date"].to_numpy(), hits["patch_id"].to_numpy()
    best["dates"] = [[dates[i] for i in g if dates[i]] for g in groups]
    best["matched_patches"] = [[patch_ids[i] for i in g] for g in groups]
    return best


def own_place(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """``frame`` with each patch as its own place: ``dates`` its date, ``matched_patches`` its id."""
    frame = frame.copy()
    frame["dates"] = [[d] if d else [] for d in frame["date"]]
    frame["matched_patches"] = [[p] for p in frame["patch_id"]]
    return frame


def _empty_hits(index: Index) -> gpd.GeoDataFrame:
    frame = index.patches([])
    frame.insert(0, "score", np.zeros(0))
    frame["label"] = np.zeros(0, dtype=np.int64)
    return own_place(frame)


def _marks(index: Index, search_vector: np.ndarray, feedback: Feedback) -> gpd.GeoDataFrame:
    """The marked patches with their ``label`` (1 right, 0 wrong) and their score under the new ranking."""
    positives, negatives = feedback.rows(index)
    rows = np.concatenate([positives, negatives]).astype(np.int64)
    frame = index.patches(rows)
    vectors = index.vector_rows(rows, search=True) if len(rows) else np.zeros((0, search_vector.shape[1]), np.float32)
    frame.insert(0, "score", (vectors @ search_vector[0]).astype(float) if len(rows) else np.zeros(0))
    frame["label"] = [1] * len(positives) + [0] * len(negatives)
    return own_place(frame)


def _describe(query: dict, expansion: QueryExpansion, feedback: Feedback | None, places: bool = True) -> dict:
    query["places"] = places
    query["expansion"] = {"k": expansion.k, "alpha": expansion.alpha} if expansion.enabled and not feedback else None
    if feedback:
        query["feedback"] = {"positives": list(feedback.positives), "negatives": list(feedback.negatives)}
    return query


def query_point(index: Index, lon: float, lat: float, k: int = 10, query_date: str | None = None, filters: Filters = Filters(),
                expansion: QueryExpansion = QueryExpansion(), feedback: Feedback | None = None, *,
                places: bool = True) -> QueryResult:  # fmt: skip
    """The ``k`` patches most like the patch covering (lon, lat).

    ``expansion`` (on by default) adds the query's nearest neighbours to it; ``feedback``
    re-ranks by the patches marked right and wrong instead.
    """
    lon, lat = validate.lonlat(lon, lat)
    row = patch_at(index, lon, lat, query_date)
    vector = index.vector_rows([row])
    centre = tuple(index.centres([row])[0])
    hits, marks = _rank(index, vector, k, filters, centre, row, expansion, feedback, places)
    patch = index.patches([row])
    query = {"type": "point", "lon": lon, "lat": lat, "patch_id": patch["patch_id"].iloc[0], "date": patch["date"].iloc[0], "k": k}
    return QueryResult(hits, _describe(query, expansion, feedback, places), patch, marks)


def query_xy(index: Index, x: float, y: float, crs: str, k: int = 10, query_date: str | None = None, filters: Filters = Filters(),
             expansion: QueryExpansion = QueryExpansion(), feedback: Feedback | None = None, *,
                places: bool = True) -> QueryResult:  # fmt: skip
    """Like :func:`query_point` with coordinates in any CRS."""
    x, y = validate.xy(x, y)
    try:
        lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
    except Exception as exc:  # pyproj raises CRSError or ProjError
        raise QueryError(f"cannot transform ({x}, {y}) from {crs}: {exc}") from None
    result = query_point(index, lon, lat, k, query_date, filters, expansion, feedback, places=places)
    result.query.update({"x": x, "y": y, "crs": crs})
    return result


def query_patch(index: Index, patch_id: str, k: int = 10, filters: Filters = Filters(),
                expansion: QueryExpansion = QueryExpansion(), feedback: Feedback | None = None, *,
                places: bool = True) -> QueryResult:  # fmt: skip
    """The ``k`` patches most like an indexed patch, by id (``scene:row:col``)."""
    matches = index.rows_of([patch_id])
    matches = matches[matches >= 0]
    if len(matches) == 0:
        raise QueryError(f"no patch {patch_id!r} in {index.path}")
    row = int(matches[0])
    centre = tuple(index.centres([row])[0])
    hits, marks = _rank(index, index.vector_rows([row]), k, filters, centre, row, expansion, feedback, places)
    query = _describe({"type": "patch", "patch_id": patch_id, "k": k}, expansion, feedback, places)
    return QueryResult(hits, query, index.patches([row]), marks)


def query_image(index: Index, path: str | os.PathLike, k: int = 10, filters: Filters = Filters(),
                expansion: QueryExpansion = QueryExpansion(), feedback: Feedback | None = None, *,
                places: bool = True) -> QueryResult:  # fmt: skip
    """The ``k`` patches most like an image chip (PNG/JPEG RGB, or a GeoTIFF with the index's bands)."""
    vector = embed_chip(index, path)
    hits, marks = _rank(index, vector, k, filters, None, None, expansion, feedback, places)
    return QueryResult(hits, _describe({"type": "image", "image": str(path), "k": k}, expansion, feedback, places), marks=marks)


def embed_chip(index: Index, path: str | os.PathLike) -> np.ndarray:
    """(1, dim) vector of an image file, embedded the way the index embedded its patches.

    The model is built once per index config and cached (:func:`rscbir.models.load.model_from_config`).
    """
    path = Path(path)
    if not path.is_file():
        raise QueryError(f"{path}: no such image file")
    config = index.model_config
    if config.backbone == "imported" or (index.pca is None and index.manifest.dim != config.dim):
        raise QueryError(f"{index.path} holds vectors imported from a file ({config.weights if config.backbone == 'imported' else 'rscbir export'}), "
                         "without the model or projection that made them: query it by --lonlat, --xy or --patch-id")  # fmt: skip
    import torch  # only an image query runs the model: point, patch and change queries never load torch

    from rscbir.images import load_image
    from rscbir.models.load import model_from_config

    bands = list(config.input_bands)
    if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"):
        if len(bands) != 3:
            raise QueryError(f"{path}: the index embeds {len(bands)} bands ({', '.join(bands)}); query with a GeoTIFF chip holding them")
        x = load_image(path)
    else:
        x = torch.from_numpy(_read_chip(index, path, bands))
    model = model_from_config(config)
    with torch.inference_mode():
        vector = model(x[None]).float().numpy()
    pca, places = index.pca, index.places
    vector = pca.transform(vector) if pca is not None else vector
    return places.transform(vector) if places is not None else vector  # the chip's date is unknown: not centred


def _read_chip(index: Index, path: Path, bands: list[str]) -> np.ndarray:
    try:
        with rasterio.open(path) as ds:
            data = ds.read()
    except RasterioError as exc:
        raise QueryError(f"{path}: not a readable image ({exc})") from None
    if data.shape[0] != len(bands):
        raise QueryError(f"{path}: has {data.shape[0]} bands; the index embeds {len(bands)} ({', '.join(bands)}) in that order")
    scene = index.manifest.scenes[0].doc  # chips are scaled like the first indexed scene
    return apply_scaling(data, Scaling.from_dict(scene.get("scaling")), scene.get("band_stats"))


# ------------------------------------------------------------------ change retrieval
def change_vectors(index: Index, dates: Sequence[str]) -> tuple[gpd.GeoDataFrame, np.ndarray, np.ndarray]:
    """For each (row, col) indexed at both dates: the after-date catalog row, the normalised
    difference vector (after - before) and the change magnitude (1 - cosine)."""
    pair = indexed_pair(index, dates)
    difference = pair.vectors_after - pair.vectors_before
    norms = np.linalg.norm(difference, axis=1, keepdims=True)
    return pair.rows_after, difference / np.maximum(norms, 1e-12), pair.distance


def query_change(index: Index, lon: float, lat: float, dates: Sequence[str], k: int = 10, all_pairs: bool = False,
                 threshold: Threshold | str | float = "otsu", exclude_radius: float | None = None) -> QueryResult:  # fmt: skip
    """Places whose change between ``dates`` is most like the change at (lon, lat).

    The example is the normalised difference of the two embeddings of the patch
    under the point; candidates are the patches whose change magnitude passes
    ``threshold`` (all pairs with ``all_pairs``), ranked by cosine similarity of
    their difference vectors, so new construction finds other new construction
    rather than every change.
    """
    frame, directions, magnitude = change_vectors(index, dates)
    point = shapely.Point(lon, lat)
    covering = np.flatnonzero(frame.geometry.covers(point).to_numpy())
    if len(covering) == 0:
        raise OutsideCoverageError(f"point ({lon:.6f}, {lat:.6f}) is not covered by a patch indexed at both dates {', '.join(dates)}")
    example = int(covering[0])
    candidates = np.ones(len(frame), bool) if all_pairs else magnitude > Threshold.parse(threshold).value(magnitude)
    candidates[example] = False
    if exclude_radius:
        candidates &= metres_from(frame, lon, lat) > exclude_radius
    similarity = directions @ directions[example]
    order = [i for i in np.argsort(-similarity) if candidates[i]][:k]
    iso = [normalise_date(d) for d in dates]
    hits = gpd.GeoDataFrame(
        {
            "rank": np.arange(1, len(order) + 1),
            "score": similarity[order].astype(float),
            "change_magnitude": magnitude[order].astype(float),
            "patch_id": frame["patch_id"].to_numpy()[order],
            "scene_id": frame["scene_id"].to_numpy()[order],
            "date": [f"{iso[0]}/{iso[1]}"] * len(order),
            "row": frame["row"].to_numpy()[order],
            "col": frame["col"].to_numpy()[order],
        },
        geometry=frame.geometry.to_numpy()[order],
        crs="EPSG:4326",
    )
    query = {"type": "change", "lon": lon, "lat": lat, "dates": iso, "patch_id": frame["patch_id"].iloc[example],
             "change_magnitude": float(magnitude[example]), "k": k}  # fmt: skip
    return QueryResult(hits, query, frame.iloc[[example]])


__all__ = ["Filters", "Feedback", "QueryExpansion", "QueryResult", "read_feedback", "query_vector", "patch_at", "query_point", "query_xy", "query_patch", "query_image", "embed_chip",
           "change_vectors", "query_change"]

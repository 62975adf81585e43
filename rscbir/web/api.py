"""The JSON API and map tiles of ``rscbir serve``, read-only over one index folder.

``GET /api/query?lon=&lat=&k=[&date=][&exclude_radius=]`` answers the same GeoJSON
FeatureCollection as ``rscbir query``; tiles are rendered by rio-tiler straight from
the indexed rasters (``/api/tiles/SCENE/z/x/y.png``) and from a pair's change scores
(``/api/change-tiles/D1/D2/z/x/y.png``); ``/api/change?dates=D1,D2[&level=pixel][&marks=LON,LAT,1;LON,LAT,0]`` is a
pair's change map (patch by patch from the stored vectors, or pixel by pixel from the rasters), taught by marks when given;
``/api/when?lon=&lat=`` is "when did this place change?" over every date (``rscbir change --index`` without
``--dates``): the place's score at each step. Bad parameters answer 400, unknown scenes,
patches and points outside coverage 404, always as ``{"error": "..."}``.
"""

from __future__ import annotations

import io
import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import geopandas as gpd
import numpy as np
from flask import Blueprint, Response, current_app, jsonify, request
from PIL import Image
from rasterio.io import MemoryFile
from rio_tiler.colormap import cmap
from rio_tiler.errors import TileOutsideBounds
from rio_tiler.io import Reader
from rio_tiler.utils import render

from rscbir import export, validate
from rscbir.change import ChangeScores, flag_changes, scores_from_index
from rscbir.change.series import SeriesChange, place_history, series_change
from rscbir.errors import IndexFileError, OutsideCoverageError, QueryError, RscbirError
from rscbir.index import Index
from rscbir.index.describe import describe_index
from rscbir.index.layout import MANIFEST
from rscbir.modes import TAUGHT
from rscbir.query import Feedback, Filters, QueryExpansion, query_change, query_point
from rscbir.scene import ScalingMode, Scene, apply_scaling

CHANGE_METHOD = "cosine"  # the stored vectors: a pair's change map costs no CNN pass


class ApiError(Exception):
    """An answer other than 200, with a message for the JSON body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class PairChange:
    """A date pair's patch change scores, the cut, and the score raster rio-tiler reads tiles from."""

    scores: ChangeScores
    geojson: dict
    raster: MemoryFile
    low: float
    high: float


@dataclass
class LiveIndex:
    """The index in ``path``, reopened when its manifest changes.

    ``rscbir index`` swaps ``index.json`` last, so an append becomes visible on the
    next request and a request never sees half of one.
    """

    path: Path
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _stamp: tuple | None = None
    _index: Index | None = None
    _scenes: dict = field(default_factory=dict)
    _changes: dict = field(default_factory=dict)

    def _manifest_stamp(self) -> tuple | None:
        try:
            stat = (self.path / MANIFEST).stat()
        except FileNotFoundError:
            return None  # Index.open says what is wrong
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def get(self) -> Index:
        with self._lock:
            for attempt in range(3):  # an append may swap generations while we open the previous one
                stamp = self._manifest_stamp()
                if stamp is not None and stamp == self._stamp:
                    return self._index
                try:
                    self._index, self._stamp = Index.open(self.path), stamp
                except IndexFileError:
                    if attempt == 2:
                        raise
                    continue
                self._scenes.clear()
                self._changes.clear()
                return self._index
            raise AssertionError("unreachable")

    def scene(self, scene_id: str) -> Scene:
        """The opened scene (its band statistics estimated once) of an indexed scene id, else 404."""
        index = self.get()
        with self._lock:
            if scene_id not in self._scenes:
                known = {s.scene_id for s in index.manifest.scenes}
                if scene_id not in known:
                    raise ApiError(404, f"no scene {scene_id!r} in this index; indexed: {', '.join(sorted(known))}")
                if not index.scene_record(scene_id).doc.get("sources"):
                    raise ApiError(404, f"scene {scene_id!r} holds vectors imported without imagery: no tiles to draw")
                self._scenes[scene_id] = Scene.from_dict(index.scene_record(scene_id).doc)
            return self._scenes[scene_id]

    def pixel_change(self, dates: tuple[str, str], marks: Sequence[dict] = ()) -> PairChange:
        """A pair's change map pixel by pixel (``marks``: ``{"lon", "lat", "changed"}``), as ``rscbir change BEFORE
        AFTER [--marks]`` makes it from the indexed rasters. The first call makes the pair's CNN evidence (about a
        minute for a NAIP tile on 2 cores) and caches it on disk; every later map, with any marks, takes seconds.
        The latest map of each pair is what ``/api/change-tiles/...?level=pixel`` draws."""
        index = self.get()
        with self._lock:
            key = (dates, "pixel", tuple((m["lon"], m["lat"], int(bool(m["changed"]))) for m in marks))
            if key not in self._changes:
                self._changes[key] = _pixel_pair_change(index, dates, [self.scene(r.scene_id) for r in index.scenes_on(dates)], marks)
            self._changes[(dates, "pixel")] = self._changes[key]
            return self._changes[key]

    def latest_pixel_change(self, dates: tuple[str, str]) -> PairChange:
        """The pixel map of ``dates`` last asked for (label-free when none was)."""
        with self._lock:
            found = self._changes.get((dates, "pixel"))
        return found if found is not None else self.pixel_change(dates)

    def series(self) -> SeriesChange:
        """Change through every date of the index (``rscbir change --index`` without ``--dates``), once per generation."""
        index = self.get()
        with self._lock:
            if "series" not in self._changes:
                self._changes["series"] = series_change(index)
            return self._changes["series"]

    def change(self, dates: tuple[str, str]) -> PairChange:
        """Change scores of a date pair from the stored vectors, computed once per index generation."""
        index = self.get()
        with self._lock:
            if dates not in self._changes:
                scores = scores_from_index(index, dates, CHANGE_METHOD)
                frame, summary = flag_changes(scores, CHANGE_METHOD)
                data, transform = export.score_grid(scores, CHANGE_METHOD)
                raster = _memory_raster(data, scores.grid.crs, transform)
                finite = data[np.isfinite(data)]
                low, high = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))
                geojson = export.change_geojson(frame, summary)
                self._changes[dates] = PairChange(scores, geojson, raster, float(low), float(max(high, low + 1e-9)))
            return self._changes[dates]


def _pixel_pair_change(index: Index, dates: tuple[str, str], scenes: list[Scene], marks: Sequence[dict]) -> PairChange:
    from rscbir.change.evidence import default_cache, scene_evidence
    from rscbir.change.marks import grid_marks
    from rscbir.change.taught import taught_change_map
    from rscbir.models.load import model_from_config
    from rscbir.tiling import aligned_grid

    before, after = scenes
    grid = aligned_grid([before, after])
    read = grid_marks(_mark_points(marks), grid, "the marks") if marks else None
    evidence, _ = scene_evidence(before, after, index.tiling, model=model_from_config(index.model_config), cache=default_cache())
    found = taught_change_map(evidence, None, read)
    doc = export.change_geojson(found.areas, found.summary)
    doc["features"] += _mark_features(marks)
    return PairChange(found.scores, doc, _memory_raster(found.scores.pixels[TAUGHT], grid.crs, found.scores.grid.transform), 0.0, 1.0)


def _memory_raster(data: np.ndarray, crs, transform) -> MemoryFile:
    """A float32 score map as an in-memory GeoTIFF (NaN nodata) that rio-tiler cuts tiles from."""
    raster = MemoryFile()
    with raster.open(driver="GTiff", width=data.shape[1], height=data.shape[0], count=1, dtype="float32", crs=crs,
                     transform=transform, nodata=float("nan")) as dst:  # fmt: skip
        dst.write(data.astype(np.float32), 1)
    return raster


def _mark_points(marks: Sequence[dict]) -> gpd.GeoDataFrame:
    """Clicked marks (``{"lon", "lat", "changed"}``) as EPSG:4326 points with a 0/1 ``changed`` column, checked."""
    for mark in marks:
        validate.lonlat(mark["lon"], mark["lat"])
    return gpd.GeoDataFrame({"changed": [int(bool(m["changed"])) for m in marks]},
                            geometry=gpd.points_from_xy([m["lon"] for m in marks], [m["lat"] for m in marks]), crs="EPSG:4326")  # fmt: skip


def _mark_features(marks: Sequence[dict]) -> list[dict]:
    return [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [m["lon"], m["lat"]]},
             "properties": {"mark": True, "changed": int(bool(m["changed"]))}} for m in marks]  # fmt: skip


# ------------------------------------------------------------------ parameters
def _number(name: str, kind=float, default=None, required: bool = False):
    text = request.args.get(name)
    if text is None or text == "":
        if required:
            raise ApiError(400, f"missing parameter {name!r}")
        return default
    try:
        value = kind(text)
    except ValueError:
        raise ApiError(400, f"parameter {name!r} must be {'an integer' if kind is int else 'a number'}, not {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(400, f"parameter {name!r} must be finite, not {text!r}")
    return value


def _lonlat() -> tuple[float, float]:
    try:
        return validate.lonlat(_number("lon", required=True), _number("lat", required=True))
    except QueryError as exc:
        raise ApiError(400, str(exc)) from None


def _k() -> int:
    k = _number("k", int, 10)
    if not 1 <= k <= 1000:
        raise ApiError(400, f"k must be 1..1000, not {k}")
    return k


def _bbox() -> tuple[float, float, float, float] | None:
    text = request.args.get("bbox")
    if not text:
        return None
    try:
        box = [float(v) for v in text.split(",")]
        if len(box) != 4:
            raise ValueError
    except ValueError:
        raise ApiError(400, f"bbox must be W,S,E,N in degrees, not {text!r}") from None
    try:
        return validate.bbox(box)
    except QueryError as exc:
        raise ApiError(400, f"bbox {text!r}: {exc}") from None


def _dates(text: str | None) -> tuple[str, str]:
    parts = [d for d in (text or "").split(",") if d]
    if len(parts) != 2:
        raise ApiError(400, f"dates must be two dates D1,D2, not {text!r}")
    return parts[0], parts[1]


# ------------------------------------------------------------------ answers shared with the page
def point_query(index: Index, lon: float, lat: float, k: int = 10, date: str | None = None, query_date: str | None = None,
                exclude_radius: float | None = None, bbox=None, qe: int = 10, positives=(), negatives=()) -> dict:  # fmt: skip
    """What ``rscbir query INDEX --lonlat LON LAT`` prints, with the same defaults (GeoJSON as a dict)."""
    filters = Filters(bbox=bbox, dates=(date,) if date else (), exclude_radius=exclude_radius)
    feedback = Feedback().add(positives, negatives)
    result = query_point(index, lon, lat, k, query_date or date, filters, QueryExpansion(qe), feedback)
    return export.to_geojson(result)


def change_query(index: Index, lon: float, lat: float, dates: tuple[str, str], k: int = 10, exclude_radius: float | None = None) -> dict:
    """What ``rscbir query-change`` prints: places whose change is most like the change under the point."""
    return export.to_geojson(query_change(index, lon, lat, dates, k, exclude_radius=exclude_radius))


def taught_change(change: PairChange, marks: list[dict]) -> dict:
    """A pair's change map after marks (``[{"lon", "lat", "changed": 1 | 0}, ...]``), as ``rscbir change --index
    --marks`` makes it; the marks ride along as point features with ``mark: true`` (kept in a download)."""
    import dataclasses

    from rscbir.change.marks import patch_marks
    from rscbir.change.taught import taught_patch_map

    scores = dataclasses.replace(change.scores, patches=change.scores.patches.copy())  # the cached label-free map stays as it is
    found = taught_patch_map(scores, CHANGE_METHOD, patch_marks(_mark_points(marks), scores.patches, "the marks"))
    doc = export.change_geojson(found.areas, found.summary)
    doc["features"] += _mark_features(marks)
    return doc


def scene_boxes(index: Index) -> dict[str, tuple[float, float, float, float]]:
    """Each scene's lon/lat box (west, south, east, north): the bounds of its patches."""
    return index.scene_bounds()


def footprints(index: Index) -> dict:
    """One lon/lat box per scene, with its id, date and patch count."""
    boxes, features = scene_boxes(index), []
    for record in index.manifest.scenes:
        scene_id, date = record.scene_id, record.date
        west, south, east, north = boxes[scene_id]
        ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                         "properties": {"scene_id": scene_id, "date": date, "patches": record.patches,
                                        "tooltip": f"{scene_id} ({date})"}})  # fmt: skip
    return {"type": "FeatureCollection", "features": features}


def scene_tile(scene: Scene, rgb: list[int], z: int, x: int, y: int) -> bytes:
    """A 256 px PNG map tile of a scene's display bands, scaled as the index scaled them for the CNN."""
    picks = [scene.sources[i] for i in rgb]
    by_file: dict[str, list[int]] = {}
    for source in picks:
        by_file.setdefault(source.path, []).append(source.index)
    read = {}
    for path, indexes in by_file.items():
        with Reader(path) as src:
            image = src.tile(x, y, z, indexes=indexes)
        read[path] = (iter(image.array.data), image.mask)
    bands = np.stack([next(read[s.path][0]) for s in picks]).astype(np.float32)
    mask = np.minimum.reduce([m for _, m in read.values()])
    stats = scene.band_stats()[rgb] if scene.scaling.mode is ScalingMode.PERCENTILE else None
    pixels = (np.clip(apply_scaling(bands, scene.scaling, stats), 0, 1) * 255).astype(np.uint8)
    return render(pixels, mask=mask, img_format="PNG")


def tilejson(name: str, description: str, template: str, bounds: Sequence[float], zooms: tuple[int, int]) -> dict:
    """A TileJSON 3.0.0 document: what QGIS ("XYZ Tiles"), Leaflet or MapLibre need to show a layer of this server."""
    west, south, east, north = bounds
    minzoom, maxzoom = zooms
    return {"tilejson": "3.0.0", "name": name, "description": description, "scheme": "xyz", "tiles": [template],
            "bounds": [west, south, east, north], "minzoom": minzoom, "maxzoom": maxzoom,
            "center": [(west + east) / 2, (south + north) / 2, max(minzoom, min(maxzoom, maxzoom - 2))]}  # fmt: skip


def scene_zooms(scene: Scene) -> tuple[int, int]:
    """Web-Mercator zooms at which a scene's first display band is worth reading (rio-tiler's, from its resolution)."""
    with Reader(scene.sources[0].path) as src:
        return int(src.minzoom), int(src.maxzoom)


def change_tile(change: PairChange, z: int, x: int, y: int) -> bytes:
    """A PNG map tile of a pair's change scores (inferno, 2-98 % of the scores), no-patch cells transparent."""
    with change.raster.open() as dataset, Reader(None, dataset=dataset) as src:
        image = src.tile(x, y, z, indexes=1, resampling_method="nearest")
    values = image.array.data[0]
    scaled = np.clip((values - change.low) / (change.high - change.low), 0, 1)
    scaled = (np.nan_to_num(scaled) * 254 + 1).astype(np.uint8)
    mask = np.where(np.isfinite(values) & (image.mask > 0), 255, 0).astype(np.uint8)
    return render(scaled[None], mask=mask, img_format="PNG", colormap=cmap.get("inferno"))


def thumbnail(index: Index, patch_id: str, side: int = 96) -> bytes:
    rows = index.rows_of([patch_id])
    if rows[0] < 0:
        raise ApiError(404, f"no patch {patch_id!r} in this index")
    pixels = export.patch_pixels(index, index.catalog_rows(rows).iloc[0])
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((side, side), Image.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------ routes
api = Blueprint("rscbir_api", __name__)


def live() -> LiveIndex:
    return current_app.extensions["rscbir_index"]


def _geojson(doc: dict) -> Response:
    return Response(json.dumps(doc), mimetype="application/geo+json")


def _png(data: bytes) -> Response:
    return Response(data, mimetype="image/png", headers={"Cache-Control": "no-cache"})


@api.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return jsonify(error=str(exc)), exc.status


@api.errorhandler(OutsideCoverageError)
def _outside(exc: OutsideCoverageError):
    return jsonify(error=str(exc)), 404


@api.errorhandler(RscbirError)
def _user_error(exc: RscbirError):
    return jsonify(error=str(exc)), 400


@api.errorhandler(TileOutsideBounds)
def _no_tile(exc: TileOutsideBounds):
    return jsonify(error=f"tile outside the scene: {exc}"), 404


@api.errorhandler(Exception)
def _unexpected(exc: Exception):
    current_app.logger.exception("request failed")
    return jsonify(error=f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'internal error'}"), 500


@api.get("/api/info")
def info():
    live().get()
    return jsonify(describe_index(live().path))


@api.get("/api/footprints")
def scene_footprints():
    return _geojson(footprints(live().get()))


@api.get("/api/query")
def query():
    lon, lat = _lonlat()
    doc = point_query(live().get(), lon, lat, _k(), request.args.get("date") or None, request.args.get("query_date") or None,
                      _number("exclude_radius"), _bbox(), _number("qe", int, 10), request.args.getlist("positive"),
                      request.args.getlist("negative"))  # fmt: skip
    return _geojson(doc)


@api.get("/api/query-change")
def query_change_route():
    lon, lat = _lonlat()
    return _geojson(change_query(live().get(), lon, lat, _dates(request.args.get("dates")), _k(), _number("exclude_radius")))


@api.get("/api/change")
def change():
    dates, marks = _dates(request.args.get("dates")), _marks(request.args.get("marks"))
    if _level() == "pixel":
        return _geojson(live().pixel_change(dates, marks).geojson)
    pair = live().change(dates)
    return _geojson(taught_change(pair, marks) if marks else pair.geojson)


@api.get("/api/when")
def when():
    """When did the place under lon/lat change? Its score at every step of the index's dates (JSON)."""
    lon, lat = _lonlat()
    return jsonify(place_history(live().series(), lon, lat))


def _level() -> str:
    level = request.args.get("level", "patch")
    if level not in ("patch", "pixel"):
        raise ApiError(400, f"level must be patch or pixel, not {level!r}")
    return level


def _marks(text: str | None) -> list[dict]:
    """``marks=LON,LAT,1;LON,LAT,0``: points marked changed (1) or not changed (0)."""
    marks = []
    for part in (text or "").split(";"):
        if not part.strip():
            continue
        try:
            lon, lat, answer = part.split(",")
            marks.append({"lon": float(lon), "lat": float(lat), "changed": {"1": 1, "0": 0}[answer.strip()]})
        except (ValueError, KeyError):
            raise ApiError(400, f"marks must be LON,LAT,1 or LON,LAT,0 separated by ';', not {part!r}") from None
    return marks


@api.get("/api/tiles/<scene_id>/<int:z>/<int:x>/<int:y>.png")
def tiles(scene_id: str, z: int, x: int, y: int):
    scene = live().scene(scene_id)  # only indexed scene ids reach a file: no path from the URL is opened
    return _png(scene_tile(scene, list(live().get().model_config.rgb), z, x, y))


@api.get("/api/change-tiles/<d1>/<d2>/<int:z>/<int:x>/<int:y>.png")
def change_tiles(d1: str, d2: str, z: int, x: int, y: int):
    pair = live().latest_pixel_change((d1, d2)) if _level() == "pixel" else live().change((d1, d2))
    return _png(change_tile(pair, z, x, y))


@api.get("/api/tilejson/<scene_id>.json")
def scene_tilejson(scene_id: str):
    """TileJSON of a scene's imagery: paste its ``tiles`` URL into QGIS as an XYZ Tiles layer."""
    scene = live().scene(scene_id)
    record = live().get().scene_record(scene_id)
    template = f"{request.host_url}api/tiles/{scene_id}/{{z}}/{{x}}/{{y}}.png"
    return jsonify(tilejson(scene_id, f"{scene_id}, sensed {record.date or 'on an unknown date'} (rscbir serve)", template,
                            live().get().scene_bounds()[scene_id], scene_zooms(scene)))  # fmt: skip


@api.get("/api/tilejson/change/<d1>/<d2>.json")
def change_tilejson(d1: str, d2: str):
    """TileJSON of the change layer between two dates (``level=pixel`` for the pixel map), as the page draws it."""
    level, index = _level(), live().get()
    before, after = index.scenes_on([d1, d2])  # both dates must be indexed, on one grid
    query = "?level=pixel" if level == "pixel" else ""
    template = f"{request.host_url}api/change-tiles/{d1}/{d2}/{{z}}/{{x}}/{{y}}.png{query}"
    return jsonify(tilejson(f"change {before.date} to {after.date}", f"rscbir change scores, {level} level (inferno, 2-98 %)",
                            template, index.scene_bounds()[before.scene_id], scene_zooms(live().scene(before.scene_id))))  # fmt: skip


@api.get("/api/thumbs/<patch_id>.png")
def thumbs(patch_id: str):
    return _png(thumbnail(live().get(), patch_id))


@api.get("/api/<path:rest>")
def unknown(rest: str):
    """Any other /api path (``..`` included) is a JSON 404, never the page and never a file."""
    raise ApiError(404, f"no API endpoint /api/{rest}")


def install(server, index_dir) -> LiveIndex:
    """Register the API on a Flask ``server`` for the index in ``index_dir`` (opened now, so a bad folder fails early)."""
    holder = LiveIndex(Path(index_dir))
    holder.get()
    server.extensions["rscbir_index"] = holder
    server.register_blueprint(api)
    return holder

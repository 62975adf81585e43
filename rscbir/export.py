"""Writers: query results and change maps as GeoJSON, CSV, GeoTIFF, PNG and a Leaflet map.

All geometry is EPSG:4326 here, the output edge. Files are written atomically.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, TextIO

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.shutil
from affine import Affine
from PIL import Image, ImageDraw
from rasterio.io import MemoryFile
from rasterio.windows import Window
from scipy import ndimage

from rscbir.atomic import atomic_path
from rscbir.catalog import OUTPUT_CRS, patch_grid
from rscbir.errors import OutputError
from rscbir.grid import Grid
from rscbir.index import Index
from rscbir.modes import ChangeMethod, score_name
from rscbir.query import QueryResult
from rscbir.scene import Scene

if TYPE_CHECKING:  # writing a query's results needs no deep-learning framework
    from rscbir.change import ChangeScores

PROPERTIES = ["rank", "score", "patch_id", "scene_id", "date", "row", "col"]
PLACE_PROPERTIES = ["dates", "matched_patches"]  # the same ground on other dates (one hit per place)


def result_rows(result: QueryResult) -> gpd.GeoDataFrame:
    """The hits, then the patches the user marked (rank empty, ``label`` 1 right / 0 wrong), so a result
    written out and read back as ``--feedback`` keeps every earlier mark; new hits have an empty label."""
    hits = result.hits.copy()
    for name in PLACE_PROPERTIES:
        if name not in hits.columns:
            hits[name] = [[] for _ in range(len(hits))]
    hits["label"] = None
    columns = [*PROPERTIES, *PLACE_PROPERTIES, "label", "geometry"]
    frames = [hits[columns]]
    if result.marks is not None and len(result.marks):
        marks = result.marks.copy()
        marks["rank"] = None
        marks["label"] = marks["label"].astype(object)
        frames.append(marks[columns])
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs="EPSG:4326")


def to_geojson(result: QueryResult) -> dict:
    """A FeatureCollection (RFC 7946, lon/lat) of the hits; the query rides along as a foreign member."""
    doc = json.loads(result_rows(result).to_json(drop_id=True))
    doc["query"] = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in result.query.items()}
    if result.query_patch is not None and len(result.query_patch):
        doc["query"]["geometry"] = json.loads(result.query_patch[["geometry"]].to_json())["features"][0]["geometry"]
    return doc


def to_csv(result: QueryResult) -> str:
    """CSV of the hits with the patch centre as lon/lat and the polygon as WKT."""
    rows = result_rows(result)
    frame = rows[[*PROPERTIES, *PLACE_PROPERTIES, "label"]].copy()
    for name in PLACE_PROPERTIES:
        frame[name] = frame[name].map(" ".join)
    bounds = rows.geometry.bounds.to_numpy() if len(rows) else np.zeros((0, 4))
    frame["lon"] = (bounds[:, 0] + bounds[:, 2]) / 2  # box centre: patches are small, lon/lat is fine
    frame["lat"] = (bounds[:, 1] + bounds[:, 3]) / 2
    frame["wkt"] = rows.geometry.to_wkt().to_numpy() if len(rows) else []
    return frame.to_csv(index=False)


def write_text(text: str, path: str | os.PathLike | None, stdout: TextIO | None = None) -> None:
    """Write to ``path`` atomically, or to ``stdout`` when path is None or '-'."""
    if path in (None, "-"):
        (stdout or sys.stdout).write(text if text.endswith("\n") else text + "\n")
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def patch_pixels(index: Index, row, scenes: dict[str, Scene] | None = None) -> np.ndarray:
    """(h, w, 3) uint8 display pixels of an indexed patch, read again from its scene.

    ``scenes`` caches opened scenes by id across calls (a contact sheet reads many patches).
    """
    scenes = {} if scenes is None else scenes
    if "crs" not in row or not index.scene_record(row["scene_id"]).doc.get("sources"):
        raise OutputError(f"{index.path}: scene {row['scene_id']!r} holds vectors imported without imagery; "
                          "nothing to draw (query results and maps without --preview still work)")  # fmt: skip
    if row["scene_id"] not in scenes:
        scenes[row["scene_id"]] = Scene.from_dict(index.scene_record(row["scene_id"]).doc)
    scene = scenes[row["scene_id"]]
    grid = patch_grid(row)
    with scene.reader(grid) as reader:
        data = scene.scale(reader.read(Window(0, 0, grid.width, grid.height)))
    rgb = list(index.model_config.rgb) if len(data) >= 3 else [0, 0, 0]
    return (np.clip(np.moveaxis(data[rgb], 0, -1), 0, 1) * 255).astype(np.uint8)


def contact_sheet(index: Index, result: QueryResult, path: str | os.PathLike, thumb: int = 128, query_image=None) -> Path:
    """A PNG: the query then the top hits, each labelled with rank, score, date and grid row:col (the
    ``row:col`` end of its patch id, so marks can be matched to the sheet)."""
    tiles: list[tuple[np.ndarray, str]] = []
    scenes: dict[str, Scene] = {}
    has_query = result.query_patch is not None and len(result.query_patch)
    wanted = [result.query_patch["patch_id"].iloc[0]] if has_query else []
    rows = index.catalog_rows(index.rows_of(wanted + list(result.hits["patch_id"])))  # pixel windows of these patches only
    if has_query:
        q = rows.iloc[0]
        tiles.append((patch_pixels(index, q, scenes), f"query {q['date'] or ''}"))
    elif query_image is not None:
        with Image.open(query_image) as image:
            tiles.append((np.asarray(image.convert("RGB")), "query image"))
    for hit, (_, row) in zip(result.hits.itertuples(), rows.iloc[len(wanted) :].iterrows()):
        tiles.append((patch_pixels(index, row, scenes), f"#{hit.rank} {hit.score:.3f} {hit.date or ''} {hit.row}:{hit.col}"))
    return _write_png(_sheet(tiles, thumb, columns=6), path)


def change_contact_sheet(index: Index, result: QueryResult, path: str | os.PathLike, thumb: int = 112) -> Path:
    """A PNG for ``query-change``: the example and each hit as a before | after pair, labelled with rank,
    similarity of the change and grid row:col."""
    before_doc, after_doc = index.scenes_on(result.query["dates"])
    example = result.query_patch.iloc[0]
    places = [(example["row"], example["col"], "example")] + [
        (h.row, h.col, f"#{h.rank} {h.score:.3f} {h.row}:{h.col}") for h in result.hits.itertuples()]  # fmt: skip
    ids = [f"{doc.scene_id}:{r}:{c}" for r, c, _ in places for doc in (before_doc, after_doc)]
    rows = index.catalog_rows(index.rows_of(ids))
    scenes: dict[str, Scene] = {}
    tiles = []
    for n, (_, _, caption) in enumerate(places):
        pair = [patch_pixels(index, rows.iloc[2 * n + k], scenes) for k in (0, 1)]
        pair = [np.asarray(Image.fromarray(p).resize((thumb, thumb), Image.NEAREST)) for p in pair]
        tiles.append((np.concatenate([pair[0], np.full((thumb, 4, 3), 255, np.uint8), pair[1]], axis=1), caption))
    return _write_png(_sheet(tiles, thumb, columns=3, width=2 * thumb + 4), path)


def changed_places_sheet(index: Index, scores, method: str, threshold: float, path: str | os.PathLike, count: int = 18,
                         thumb: int = 112) -> Path:  # fmt: skip
    """A PNG of what the flagged places look like: the ``count`` highest-scoring changed patches of a change between two
    dates of ``index`` (``scores``: :class:`~rscbir.change.ChangeScores` from its stored vectors), each a before | after
    pair captioned with rank, score and grid row:col, strongest first."""
    method = score_name(method)
    patches = scores.patches
    flagged = patches[patches[method] > threshold].sort_values(method, ascending=False).head(count)
    if flagged.empty:
        return _write_png(_sheet([(np.full((thumb, 2 * thumb + 4, 3), 255, np.uint8), "no place changed")], thumb, 1, 2 * thumb + 4), path)
    before_doc, after_doc = index.scenes_on([flagged["date_before"].iloc[0], flagged["date_after"].iloc[0]])
    ids = [f"{doc.scene_id}:{r}:{c}" for r, c in zip(flagged["row"], flagged["col"]) for doc in (before_doc, after_doc)]
    rows = index.catalog_rows(index.rows_of(ids))
    scenes: dict[str, Scene] = {}
    tiles = []
    for n, (r, c, value) in enumerate(zip(flagged["row"], flagged["col"], flagged[method])):
        pair = [np.asarray(Image.fromarray(patch_pixels(index, rows.iloc[2 * n + k], scenes)).resize((thumb, thumb), Image.BILINEAR))
                for k in (0, 1)]  # fmt: skip
        tiles.append((np.concatenate([pair[0], np.full((thumb, 4, 3), 255, np.uint8), pair[1]], axis=1),
                      f"#{n + 1} {value:.3f} {r}:{c}"))  # fmt: skip
    return _write_png(_sheet(tiles, thumb, columns=3, width=2 * thumb + 4), path)


def _sheet(tiles: list[tuple[np.ndarray, str]], thumb: int, columns: int, width: int | None = None) -> Image.Image:
    """Tiles in a grid with a caption under each; a first tile captioned ``query``/``example`` is outlined in red."""
    width = width or thumb
    columns = min(columns, max(1, len(tiles)))
    rows = -(-len(tiles) // columns)
    label = 16
    sheet = Image.new("RGB", (columns * (width + 6) + 6, rows * (thumb + label + 6) + 6), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (pixels, caption) in enumerate(tiles):
        x, y = 6 + (i % columns) * (width + 6), 6 + (i // columns) * (thumb + label + 6)
        sheet.paste(Image.fromarray(pixels).resize((width, thumb), Image.NEAREST), (x, y))
        if i == 0 and caption.startswith(("query", "example")):
            draw.rectangle([x - 3, y - 3, x + width + 2, y + thumb + 2], outline=(220, 30, 30), width=3)
        draw.text((x, y + thumb + 2), caption, fill=(0, 0, 0))
    return sheet


def results_map(result: QueryResult, path: str | os.PathLike, index: Index | None = None) -> Path:
    """A self-contained HTML map of the hits (the query patch outlined in red) that opens offline; with ``index``
    each hit's imagery is drawn in place, so the map shows what was found with no basemap from the internet."""
    hits = result.hits[[*PROPERTIES, "geometry"]] if len(result.hits) else result.hits
    images = []
    if index is not None and len(result.hits):
        rows = index.catalog_rows(index.rows_of(list(result.hits["patch_id"])))
        scenes: dict[str, Scene] = {}
        images = [(patch_pixels(index, row, scenes), shape) for (_, row), shape in zip(rows.iterrows(), hits.geometry)]
        if result.query_patch is not None and len(result.query_patch) and result.query_patch["patch_id"].iloc[0] not in set(hits["patch_id"]):
            query_row = index.catalog_rows(index.rows_of([result.query_patch["patch_id"].iloc[0]])).iloc[0]
            images.append((patch_pixels(index, query_row, scenes), result.query_patch.geometry.iloc[0]))
    return offline_map(hits, ["rank", "score", "date", "scene_id"], path, result.query_patch, images)


def change_map(areas: gpd.GeoDataFrame, path: str | os.PathLike) -> Path:
    """A self-contained HTML map of changed areas with their scores and dates (opens offline)."""
    fields = [c for c in ("max_score", "mean_score", "score", "area_m2", "date_before", "date_after") if c in areas.columns]
    return offline_map(areas, fields, path)


def offline_map(frame: gpd.GeoDataFrame, fields: list[str], path, outline: gpd.GeoDataFrame | None = None,
                images: Sequence[tuple[np.ndarray, object]] = ()) -> Path:  # fmt: skip
    """One HTML file that needs no network: plotly.js (from the installed plotly package) inlined, lon/lat axes at the
    true ground aspect (1 / cos(latitude)), ``images`` (RGB pixels, EPSG:4326 shape) drawn where they lie, ``frame``'s
    shapes outlined in blue with ``fields`` on hover and ``outline`` in red; pan and zoom with the mouse. No basemap
    and no WebGL: analysts often work where a CDN or a tile server cannot be reached."""
    import plotly.graph_objects as go

    outline = outline if outline is not None and len(outline) else None
    if len(frame) == 0 and outline is None:
        raise OutputError(f"{path}: nothing to map (no results)")
    west, south, east, north = (frame if len(frame) else outline).to_crs(OUTPUT_CRS).total_bounds
    figure = go.Figure()
    for shapes, colour, name, hover in ((frame, "#1f6feb", "results", fields), (outline, "#d1242f", "query", [])):
        if shapes is None or not len(shapes):
            continue
        lons, lats, texts = [], [], []
        for _, row in shapes.to_crs(OUTPUT_CRS).iterrows():
            text = "<br>".join(f"{f}: {_hover_value(row[f])}" for f in hover if f in row) or name
            for ring in _rings(row.geometry):
                xs, ys = zip(*ring)
                lons += [*xs, None]
                lats += [*ys, None]
                texts += [text] * len(xs) + [None]
        figure.add_trace(go.Scatter(x=lons, y=lats, mode="lines", fill="none" if images else "toself", name=name,
                                    line={"color": colour, "width": 3 if name == "query" else 2}, text=texts,
                                    hoverinfo="text", hoveron="fills+points"))  # fmt: skip
    for pixels, shape in images:
        x0, y0, x1, y1 = shape.bounds
        figure.add_layout_image(source=_png_data_url(pixels), x=x0, y=y1, sizex=x1 - x0, sizey=y1 - y0, xref="x", yref="y",
                                sizing="stretch", layer="below")  # fmt: skip
    pad = 0.05 * max(east - west, north - south, 1e-6)
    figure.update_layout(
        xaxis={"range": [west - pad, east + pad], "title": "longitude", "showgrid": False, "zeroline": False},
        yaxis={"range": [south - pad, north + pad], "title": "latitude", "showgrid": False, "zeroline": False,
               "scaleanchor": "x", "scaleratio": 1 / max(np.cos(np.radians((south + north) / 2)), 1e-6)},
        plot_bgcolor="white", margin={"l": 60, "r": 10, "t": 10, "b": 50}, legend={"x": 0.01, "y": 0.99}, dragmode="pan",
    )  # fmt: skip
    with atomic_path(path) as tmp:
        figure.write_html(str(tmp), include_plotlyjs=True, full_html=True, config={"scrollZoom": True, "displaylogo": False})
    return Path(path)


def _rings(geometry) -> list[list[tuple[float, float]]]:
    polygons = getattr(geometry, "geoms", [geometry])
    return [list(p.exterior.coords) for p in polygons if hasattr(p, "exterior")]


def _hover_value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _png_data_url(pixels: np.ndarray) -> str:
    import base64

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# ----------------------------------------------------------------------- change
def change_geojson(frame: gpd.GeoDataFrame, summary: dict) -> dict:
    """A FeatureCollection of changed areas; the method and cut ride along as the ``change`` member."""
    doc = json.loads(frame.to_json(drop_id=True))
    doc["change"] = summary
    return doc


def score_grid(scores: ChangeScores, method: ChangeMethod | str) -> tuple[np.ndarray, Affine]:
    """The scores as a float32 array on the common grid's CRS, and its transform.

    With per-pixel maps (``--dense``) the array has the grid's own pixels;
    otherwise one cell per patch stride. NaN marks pixels or cells with no patch.
    """
    method = score_name(method)
    patches = scores.patches
    if scores.pixels and method in scores.pixels:
        return scores.pixels[method], scores.grid.transform
    size, stride = scores.tiling.pixels(scores.grid)
    height = int(patches["row"].max()) + 1 if len(patches) else 1
    width = int(patches["col"].max()) + 1 if len(patches) else 1
    data = np.full((height, width), np.nan, dtype=np.float32)
    data[patches["row"].to_numpy(), patches["col"].to_numpy()] = patches[method].to_numpy()
    # a cell is the stride step; shifted so cell centres sit on patch centres
    offset = (size - stride) / 2
    return data, scores.grid.transform * Affine.translation(offset, offset) * Affine.scale(stride)


def score_raster(scores: ChangeScores, method: ChangeMethod | str, path: str | os.PathLike) -> Path:
    """Write the scores as a float32 Cloud-Optimized GeoTIFF on the common grid (see :func:`score_grid`); NaN is nodata."""
    method = score_name(method)
    patches = scores.patches
    data, transform = score_grid(scores, method)
    tags = {"method": method, "date_before": str(patches["date_before"].iloc[0]), "date_after": str(patches["date_after"].iloc[0])}
    return write_cog(data.astype(np.float32), path, scores.grid.crs, transform, f"{method} change score", tags)


COG_BLOCK = 256  # px: internal tiles of the COGs rscbir writes (GDAL's overviews halve down to about one tile)


def write_cog(data: np.ndarray, path: str | os.PathLike, crs, transform: Affine, description: str, tags: dict) -> Path:
    """A one-band float32 raster as a Cloud-Optimized GeoTIFF: tiled, deflate-compressed, with averaged overviews
    (NaN is nodata), so QGIS and any HTTP range reader open it quickly at every zoom. Written atomically."""
    height, width = data.shape
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "float32", "crs": crs,
               "transform": transform, "nodata": float("nan")}  # fmt: skip
    with MemoryFile() as memory:
        with memory.open(**profile) as staged:
            staged.write(data, 1)
            staged.set_band_description(1, description)
            staged.update_tags(**tags)
        with memory.open() as staged:
            copy_to_cog(staged, path)
    return Path(path)


def copy_to_cog(source, path: str | os.PathLike) -> Path:
    """Copy a one-band float32 raster (an open dataset or a file, tags and description kept) to ``path`` as the
    Cloud-Optimized GeoTIFF :func:`write_cog` writes, atomically; GDAL streams it, so a large file stays on disk."""
    with atomic_path(path) as tmp:
        rasterio.shutil.copy(source, tmp, driver="COG", compress="DEFLATE", predictor=3, blocksize=COG_BLOCK,
                             overview_resampling="average", BIGTIFF="IF_SAFER")  # fmt: skip
    return Path(path)


def preview_pixels(grid: Grid, max_side: int = 800) -> tuple[Grid, np.ndarray, np.ndarray]:
    """The preview's grid (at most ``max_side`` px a side) and the rows and columns of ``grid`` it shows."""
    factor = max(1.0, max(grid.width, grid.height) / max_side)
    view = Grid(grid.crs, grid.transform * Affine.scale(factor), int(grid.width / factor), int(grid.height / factor))
    rows = np.minimum((np.arange(view.height) * factor).astype(int), grid.height - 1)
    cols = np.minimum((np.arange(view.width) * factor).astype(int), grid.width - 1)
    return view, rows, cols


def change_preview(scores: ChangeScores, method: ChangeMethod | str, threshold: float, path: str | os.PathLike,
                   max_side: int = 800, mask: np.ndarray | None = None, pixel_view=None) -> Path:  # fmt: skip
    """PNG: before | after | score heat map; changed areas outlined in yellow (the pixel ``mask``'s edges
    when given, else the changed patches' boxes). ``pixel_view`` (a :class:`rscbir.change.streamed.PixelView`) gives
    the scores and mask at the preview's pixels of a map made in strips, which holds no whole-grid array."""
    method = score_name(method)
    grid = scores.grid
    view, rows, cols = preview_pixels(grid, max_side)
    factor = max(1.0, max(grid.width, grid.height) / max_side)

    def rgb(scene: Scene) -> np.ndarray:
        names = scene.band_names
        picks = [names.index(b) for b in ("B04", "B03", "B02") if b in names] or [0, 1, 2][: min(3, scene.count)]
        picks = (picks * 3)[:3]
        with scene.reader(view) as reader:
            data = scene.scale(reader.read(Window(0, 0, view.width, view.height))[picks])
        return (np.clip(np.moveaxis(data, 0, -1), 0, 1) * 255).astype(np.uint8)

    size, stride = scores.tiling.pixels(grid)
    values = scores.patches[method].to_numpy() if method in scores.patches else np.zeros(0)
    boxes = []
    if pixel_view is not None:
        pixel_scores, mask = pixel_view.scores, pixel_view.mask
    if pixel_view is not None or (mask is not None and scores.pixels and method in scores.pixels):
        pixel_scores = pixel_scores if pixel_view is not None else scores.pixels[method][np.ix_(rows, cols)]
        low, high = np.nanpercentile(pixel_scores, [2, 98]) if np.isfinite(pixel_scores).any() else (0, 1)
        heat = np.nan_to_num(np.clip((pixel_scores - low) / max(high - low, 1e-9), 0, 1), nan=0.0).astype(np.float32)
    else:
        heat = np.zeros((view.height, view.width), np.float32)
        low, high = np.nanpercentile(values, [2, 98]) if len(values) else (0, 1)
        for r, c, v in zip(scores.patches["row_off"], scores.patches["col_off"], values):
            y0, x0 = int(r / factor), int(c / factor)
            y1, x1 = int((r + size) / factor), int((c + size) / factor)
            heat[y0:y1, x0:x1] = np.clip((v - low) / max(high - low, 1e-9), 0, 1)
            if v > threshold:
                boxes.append((x0, y0, x1, y1))
    colour = np.stack([heat * 255, heat * 120, (1 - heat) * 60], axis=-1).astype(np.uint8)
    arrays = [rgb(scores.before), rgb(scores.after), colour]
    if mask is not None:
        small = mask if pixel_view is not None else mask[np.ix_(rows, cols)]
        edges = small & ~ndimage.binary_erosion(small)
        for array in arrays:
            array[edges] = (255, 255, 0)
    sheet = Image.new("RGB", (3 * view.width + 20, view.height + 20), "white")
    draw = ImageDraw.Draw(sheet)
    captions = [str(scores.patches["date_before"].iloc[0]), str(scores.patches["date_after"].iloc[0]), f"{method} score"]
    for i, (array, caption) in enumerate(zip(arrays, captions)):
        x = 5 + i * (view.width + 5)
        sheet.paste(Image.fromarray(array), (x, 15))
        draw.text((x, 2), caption, fill=(0, 0, 0))
        for x0, y0, x1, y1 in boxes:
            draw.rectangle([x + x0, 15 + y0, x + x1 - 1, 15 + y1 - 1], outline=(255, 255, 0), width=1)
    return _write_png(sheet, path)


def _write_png(image: Image.Image, path: str | os.PathLike) -> Path:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return Path(path)

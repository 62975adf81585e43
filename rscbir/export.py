"""Writers for query results: GeoJSON, CSV, a PNG contact sheet, a Leaflet map.

All geometry is EPSG:4326 here, the output edge. Files are written atomically.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import TextIO

import numpy as np

from rscbir.atomic import atomic_path
from rscbir.errors import OutputError
from rscbir.query import QueryResult

PROPERTIES = ["rank", "score", "patch_id", "scene_id", "date", "row", "col"]


def to_geojson(result: QueryResult) -> dict:
    """A FeatureCollection (RFC 7946, lon/lat) of the hits; the query rides along as a foreign member."""
    doc = json.loads(result.hits[[*PROPERTIES, "geometry"]].to_json(drop_id=True))
    doc["query"] = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in result.query.items()}
    if result.query_patch is not None and len(result.query_patch):
        doc["query"]["geometry"] = json.loads(result.query_patch[["geometry"]].to_json())["features"][0]["geometry"]
    return doc


def to_csv(result: QueryResult) -> str:
    """CSV of the hits with the patch centre as lon/lat and the polygon as WKT."""
    frame = result.hits[PROPERTIES].copy()
    bounds = result.hits.geometry.bounds.to_numpy() if len(result.hits) else np.zeros((0, 4))
    frame["lon"] = (bounds[:, 0] + bounds[:, 2]) / 2  # box centre: patches are small, lon/lat is fine
    frame["lat"] = (bounds[:, 1] + bounds[:, 3]) / 2
    frame["wkt"] = result.hits.geometry.to_wkt().to_numpy() if len(result.hits) else []
    return frame.to_csv(index=False)


def write_text(text: str, path: str | os.PathLike | None, stdout: TextIO | None = None) -> None:
    """Write to ``path`` atomically, or to ``stdout`` when path is None or '-'."""
    if path in (None, "-"):
        (stdout or __import__("sys").stdout).write(text if text.endswith("\n") else text + "\n")
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def patch_pixels(index, row) -> np.ndarray:
    """(h, w, 3) uint8 display pixels of an indexed patch, read again from its scene."""
    from rasterio.crs import CRS
    from rasterio.windows import Window

    from rscbir.catalog import affine_of
    from rscbir.grid import Grid
    from rscbir.scene import Scene

    record = next(s for s in index.manifest["scenes"] if s["scene_id"] == row["scene_id"])
    scene = Scene.from_dict(record)
    grid = Grid(CRS.from_string(row["crs"]), affine_of(row), int(row["width"]), int(row["height"]))
    with scene.reader(grid) as reader:
        data = scene.scale(reader.read(Window(0, 0, grid.width, grid.height)))
    rgb = list(index.model_config.rgb) if len(data) >= 3 else [0, 0, 0]
    return (np.clip(np.moveaxis(data[rgb], 0, -1), 0, 1) * 255).astype(np.uint8)


def contact_sheet(index, result: QueryResult, path: str | os.PathLike, thumb: int = 128, query_image=None) -> Path:
    """A PNG: the query then the top hits, each labelled with rank, score and date."""
    from PIL import Image, ImageDraw

    tiles: list[tuple[np.ndarray, str]] = []
    if result.query_patch is not None and len(result.query_patch):
        q = result.query_patch.iloc[0]
        tiles.append((patch_pixels(index, q), f"query {q['date'] or ''}"))
    elif query_image is not None:
        from PIL import Image as PILImage

        with PILImage.open(query_image) as image:
            tiles.append((np.asarray(image.convert("RGB")), "query image"))
    catalog_rows = index.catalog.set_index("patch_id")
    for hit in result.hits.itertuples():
        row = catalog_rows.loc[hit.patch_id]
        tiles.append((patch_pixels(index, row), f"#{hit.rank} {hit.score:.3f} {hit.date or ''}"))
    columns = min(6, max(1, len(tiles)))
    rows = -(-len(tiles) // columns)
    label = 16
    sheet = Image.new("RGB", (columns * (thumb + 6) + 6, rows * (thumb + label + 6) + 6), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (pixels, caption) in enumerate(tiles):
        x, y = 6 + (i % columns) * (thumb + 6), 6 + (i // columns) * (thumb + label + 6)
        sheet.paste(Image.fromarray(pixels).resize((thumb, thumb), Image.NEAREST), (x, y))
        if i == 0 and caption.startswith("query"):
            draw.rectangle([x - 3, y - 3, x + thumb + 2, y + thumb + 2], outline=(220, 30, 30), width=3)
        draw.text((x, y + thumb + 2), caption, fill=(0, 0, 0))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return Path(path)


def leaflet_map(result: QueryResult, path: str | os.PathLike) -> Path:
    """An HTML Leaflet map (folium) of the hits, the query patch outlined in red."""
    try:
        import folium
    except ImportError:
        raise OutputError("--html needs folium: `pip install folium`") from None
    hits = result.hits
    if len(hits) == 0 and (result.query_patch is None or not len(result.query_patch)):
        raise OutputError("no results to map")
    bounds = (hits if len(hits) else result.query_patch).total_bounds
    fmap = folium.Map(tiles="OpenStreetMap")
    fmap.fit_bounds([[bounds[1], bounds[0]], [bounds[3], bounds[2]]])
    if len(hits):
        folium.GeoJson(
            hits[[*PROPERTIES, "geometry"]].to_json(),
            name="results",
            style_function=lambda _: {"color": "#1f6feb", "weight": 2, "fillOpacity": 0.15},
            tooltip=folium.GeoJsonTooltip(fields=["rank", "score", "date", "scene_id"]),
        ).add_to(fmap)
    if result.query_patch is not None and len(result.query_patch):
        folium.GeoJson(result.query_patch[["geometry"]].to_json(), name="query",
                       style_function=lambda _: {"color": "#d1242f", "weight": 3, "fillOpacity": 0}).add_to(fmap)  # fmt: skip
    folium.LayerControl().add_to(fmap)
    with atomic_path(path) as tmp:
        fmap.save(str(tmp))
    return Path(path)

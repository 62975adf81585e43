"""The layout of ``rscbir serve``'s page: the side panel (dates, view, results, marks) and the map."""

from __future__ import annotations

import math
import os
from pathlib import Path

import dash_leaflet as dl
from dash import dcc, html

from rscbir.web.api import LiveIndex, footprints, scene_boxes

HIT_STYLE = {"color": "#00e5ff", "weight": 2, "fillOpacity": 0.15}
QUERY_STYLE = {"color": "#ff1744", "weight": 3, "fillOpacity": 0.0}
FOOTPRINT_STYLE = {"color": "#ffd600", "weight": 1, "fill": False, "dashArray": "4 4"}
CHANGE_STYLE = {"color": "#76ff03", "weight": 2, "fill": False}
CSS = {
    "page": {"display": "flex", "height": "100vh", "margin": 0, "fontFamily": "system-ui, sans-serif", "fontSize": "14px"},
    "side": {"width": "380px", "padding": "10px", "overflowY": "auto", "borderRight": "1px solid #ccc", "boxSizing": "border-box"},
    "map": {"flex": 1, "height": "100vh"},
    "result": {"display": "flex", "alignItems": "center", "gap": "6px", "padding": "3px", "borderBottom": "1px solid #eee"},
}
MARK_COLOURS = {"right": "#c8f7c5", "wrong": "#f7c5c5", None: "white"}
CLICK_ACTIONS = [{"label": " finds places that changed like it", "value": "similar"},
                 {"label": " marks: changed here", "value": "changed"},
                 {"label": " marks: not changed here", "value": "unchanged"},
                 {"label": " when did this place change? (every date)", "value": "when"}]  # fmt: skip
MARK_ACTIONS = ("changed", "unchanged")
CHANGE_MARK_COLOURS = {1: "#ff1744", 0: "#2979ff"}  # changed: red, not changed: blue


def change_mark_layers(marks: list[dict]) -> list:
    """The change marks as circles on the map (red: changed here, blue: not changed here)."""
    return [dl.CircleMarker(center=[m["lat"], m["lon"]], radius=7, color=CHANGE_MARK_COLOURS[m["changed"]], fillOpacity=0.7,
                            className=f"change-mark change-mark-{m['changed']}") for m in marks]  # fmt: skip


def fit_zoom(west: float, south: float, east: float, north: float, width_px: int = 900, height_px: int = 700) -> int:
    """The Web Mercator zoom at which the box fits a map of about ``width_px`` x ``height_px``."""
    lon_span = max(east - west, 1e-9)
    lat_span = max(north - south, 1e-9) / max(math.cos(math.radians((south + north) / 2)), 1e-6)
    fit = min(width_px * 360 / (256 * lon_span), height_px * 360 / (256 * lat_span))
    return int(max(1, min(19, math.floor(math.log2(fit)))))


def scene_layers(live: LiveIndex, date: str | None) -> list:
    index = live.get()
    boxes = scene_boxes(index)
    layers = []
    for record in index.manifest.scenes:
        if date and record.date != date:
            continue
        west, south, east, north = boxes[record.scene_id]
        layers.append(dl.TileLayer(url=f"/api/tiles/{record.scene_id}/{{z}}/{{x}}/{{y}}.png", bounds=[[south, west], [north, east]],
                                   maxZoom=22, maxNativeZoom=19, className="imagery", id=f"imagery-{record.scene_id}"))  # fmt: skip
    return layers


def page_layout(live: LiveIndex, index_dir: str | os.PathLike) -> html.Div:
    """The whole page for the index ``live`` serves: side panel and map, fitted to the index's bounds."""
    index = live.get()
    dates = index.manifest.dates
    can_change = bool(index.manifest.grid) and len(dates) >= 2
    west, south, east, north = index.bounds
    summary = f"{len(index)} patches, {len(index.manifest.scenes)} scenes, dates {', '.join(dates) or 'none'}"

    side = html.Div(
        [
            html.H3("rscbir", style={"margin": "0 0 4px"}),
            html.Div(Path(index_dir).resolve().name, title=str(Path(index_dir).resolve()), style={"color": "#555"}),
            html.Div(summary, id="summary", style={"marginBottom": "8px"}),
            html.Label("Imagery date"),
            dcc.RadioItems(id="date", options=dates or ["all"], value=(dates[-1] if dates else "all"), inline=True),
            html.Label("View"),
            dcc.RadioItems(id="mode", options=[{"label": "Search", "value": "search"},
                                               {"label": "Change", "value": "change", "disabled": not can_change}],
                           value="search", inline=True),  # fmt: skip
            html.Div(
                [html.Label("Change from"), dcc.Dropdown(id="before", options=dates, value=dates[0] if dates else None, clearable=False),
                 html.Label("to"), dcc.Dropdown(id="after", options=dates, value=dates[-1] if dates else None, clearable=False),
                 dcc.Checklist(id="pixel-level", options=[{"label": " pixel detail (CNN on both dates; about a minute the first time)",
                                                           "value": "on"}], value=[]),
                 html.Label("A click on the map"),
                 dcc.RadioItems(id="click-action", options=CLICK_ACTIONS, value="similar", labelStyle={"display": "block"}),
                 html.Div([html.Button("Update change map", id="update-change"), html.Button("Download change map", id="download-change")],
                          style={"display": "flex", "gap": "6px", "margin": "4px 0"}),
                 dcc.Download(id="download-change-file"),
                 html.Div(id="when-panel")],  # fmt: skip
                id="change-dates",
            ),
            html.Div([html.Label("Results k "), dcc.Input(id="k", type="number", value=10, min=1, max=200, step=1, style={"width": "60px"})]),
            dcc.Checklist(id="use-bbox", options=[{"label": " only inside the box drawn on the map", "value": "on"}], value=[]),
            html.Div(
                [html.Button("Search again with marks", id="rerun"), html.Button("Download GeoJSON", id="download-button")],
                style={"display": "flex", "gap": "6px", "margin": "6px 0"},
            ),
            html.Div("Click the map to search with the patch under the click.", id="status", style={"margin": "6px 0"}),
            dcc.Loading(html.Div(id="results"), type="circle", id="loading", target_components={"results": "children"}),
            dcc.Download(id="download"),
            dcc.Store(id="query"),
            dcc.Store(id="marks", data={"positives": [], "negatives": []}),
            dcc.Store(id="hits"),
            dcc.Store(id="change-marks", data=[]),
            dcc.Store(id="change-doc"),
        ],
        style=CSS["side"],
    )
    the_map = dl.Map(
        [
            dl.LayerGroup(scene_layers(live, dates[-1] if dates else None), id="imagery"),
            dl.GeoJSON(data=footprints(index), id="footprints", options={"style": FOOTPRINT_STYLE}, interactive=False),
            dl.LayerGroup(id="change-layers"),
            dl.LayerGroup(id="change-marks-layer"),
            dl.GeoJSON(id="hits-layer", options={"style": HIT_STYLE}, interactive=False),
            dl.GeoJSON(id="query-layer", options={"style": QUERY_STYLE}, interactive=False),
            dl.FeatureGroup([dl.EditControl(id="draw", draw={"rectangle": True, "polygon": False, "polyline": False, "circle": False,
                                                              "marker": False, "circlemarker": False}, position="topleft")]),  # fmt: skip
            dl.ScaleControl(position="bottomleft"),
        ],
        id="map", center=[(south + north) / 2, (west + east) / 2], zoom=fit_zoom(west, south, east, north), maxZoom=22, style=CSS["map"],
    )  # fmt: skip
    return html.Div([side, the_map], style=CSS["page"])


def map_extent(live: LiveIndex) -> list[list[float]]:
    """[[south, west], [north, east]] of the index (the map's `bounds` prop breaks dash-leaflet 1.1 on re-render:
    the map is placed by centre and zoom, layers by this extent)."""
    west, south, east, north = live.get().bounds
    return [[south, west], [north, east]]


def when_panel(history: dict) -> list:
    """"When did this place change?": a sentence and the place's score at every step as a bar chart (red above the cut)."""
    cut, scores = history["cut"], history["scores"]
    labels = [i.replace("/", " \u2192 ") for i in history["intervals"]]
    if history["changed_between"]:
        text = (f"Changed most between {history['changed_between'].replace('/', ' and ')} (score {history['step_score']:.1f}); "
                f"{history['changed_steps']} of {len(scores)} steps above {cut:g}.")
    elif any(v is not None for v in scores):
        largest = max((v, i) for i, v in zip(history["intervals"], scores) if v is not None)
        text = (f"No step stands out: every score is at most {cut:g} (robust SD above that step's median); the largest is "
                f"{largest[1].replace('/', ' to ')} ({largest[0]:.1f}).")
    else:
        text = "No step to score: this place is on fewer than two dates."
    figure = {"data": [{"type": "bar", "x": labels, "y": [v if v is not None else 0 for v in scores],
                        "marker": {"color": ["#ff1744" if (v or 0) > cut else "#90a4ae" for v in scores]}}],
              "layout": {"height": 220, "margin": {"l": 36, "r": 8, "t": 24, "b": 70}, "title": {"text": "score per step", "font": {"size": 12}},
                         "shapes": [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": cut, "y1": cut, "line": {"dash": "dot", "color": "#ff1744"}}],
                         "xaxis": {"tickangle": -45, "tickfont": {"size": 9}}, "yaxis": {"title": {"text": "robust z"}}}}  # fmt: skip
    return [html.Div(text, id="when-summary", style={"margin": "6px 0"}),
            dcc.Graph(id="when-plot", figure=figure, config={"displayModeBar": False}, style={"height": "220px"})]  # fmt: skip


def result_rows(doc: dict, marks: dict) -> list:
    rows = []
    for feature in doc["features"]:
        p = feature["properties"]
        pid = p["patch_id"]
        mark = "right" if pid in marks["positives"] else "wrong" if pid in marks["negatives"] else None
        rows.append(
            html.Div(
                [
                    html.Img(src=f"/api/thumbs/{pid}.png", width=56, height=56, id={"type": "go", "patch": pid},
                             title="fly to this result", style={"cursor": "pointer"}),  # fmt: skip
                    html.Div(
                        [html.B(f"#{p['rank']}" if p.get("rank") is not None else "marked"), f" score {p['score']:.3f}", html.Br(),
                         f"{p['date'] or 'undated'}" + (f" (+{len(p['dates']) - 1} dates)" if len(p.get("dates") or []) > 1 else ""),
                         html.Br(), html.Small(pid)],  # fmt: skip
                        id={"type": "go-text", "patch": pid}, style={"flex": 1, "minWidth": 0, "overflow": "hidden", "cursor": "pointer"},
                    ),
                    html.Button("\u2713", id={"type": "mark", "patch": pid, "label": "right"}, className="mark-right", title="right"),
                    html.Button("\u2717", id={"type": "mark", "patch": pid, "label": "wrong"}, className="mark-wrong", title="wrong"),
                ],
                id={"type": "result", "patch": pid},
                className="result",
                style={**CSS["result"], "background": MARK_COLOURS[mark]},
            )
        )
    return rows


__all__ = ["CHANGE_STYLE", "CLICK_ACTIONS", "CSS", "MARK_COLOURS", "change_mark_layers", "fit_zoom", "map_extent", "page_layout", "result_rows", "scene_layers"]

"""The page of ``rscbir serve``: a Dash app with a dash-leaflet map over one index.

Click the map to search with the patch under the click (or, in the change view,
to find places that changed like it); draw a box to keep results inside it; mark
results right or wrong and search again (rounds accumulate); download the results
as GeoJSON. Leaflet, Dash and React come from the installed wheels; the imagery
and change tiles from :mod:`rscbir.web.api`.
"""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

import dash
import dash_leaflet as dl
from dash import ALL, Input, Output, State, ctx, dcc, html

from rscbir.errors import PortError, RscbirError
from rscbir.web.api import LiveIndex, change_query, footprints, install, point_query, scene_boxes

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


def _latlng(click: dict) -> tuple[float, float]:
    latlng = click["latlng"]
    return (latlng["lat"], latlng["lng"]) if isinstance(latlng, dict) else (latlng[0], latlng[1])


def _bbox(drawn: dict | None) -> tuple[float, float, float, float] | None:
    """W, S, E, N of the last box drawn on the map."""
    features = (drawn or {}).get("features") or []
    if not features:
        return None
    ring = features[-1]["geometry"]["coordinates"][0]
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    return min(lons), min(lats), max(lons), max(lats)


def _centre(feature: dict) -> tuple[float, float]:
    ring = feature["geometry"]["coordinates"][0]
    return sum(p[1] for p in ring[:-1]) / (len(ring) - 1), sum(p[0] for p in ring[:-1]) / (len(ring) - 1)


def _result_rows(doc: dict, marks: dict) -> list:
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


def _fit_zoom(west: float, south: float, east: float, north: float, width_px: int = 900, height_px: int = 700) -> int:
    """The Web Mercator zoom at which the box fits a map of about ``width_px`` x ``height_px``."""
    lon_span = max(east - west, 1e-9)
    lat_span = max(north - south, 1e-9) / max(math.cos(math.radians((south + north) / 2)), 1e-6)
    fit = min(width_px * 360 / (256 * lon_span), height_px * 360 / (256 * lat_span))
    return int(max(1, min(19, math.floor(math.log2(fit)))))


def _scene_layers(live: LiveIndex, date: str | None) -> list:
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


def create_app(index_dir: str | os.PathLike) -> dash.Dash:
    """The Dash app (its Flask server carries the JSON API) for the index in ``index_dir``."""
    app = dash.Dash(__name__, title="rscbir", update_title=None, serve_locally=True, suppress_callback_exceptions=True)
    live = install(app.server, index_dir)
    index = live.get()
    dates = index.manifest.dates
    can_change = bool(index.manifest.grid) and len(dates) >= 2
    west, south, east, north = index.bounds
    extent = [[south, west], [north, east]]  # the map's `bounds` prop breaks dash-leaflet 1.1 on re-render: centre + zoom instead
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
                 html.Label("to"), dcc.Dropdown(id="after", options=dates, value=dates[-1] if dates else None, clearable=False)],  # fmt: skip
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
        ],
        style=CSS["side"],
    )
    the_map = dl.Map(
        [
            dl.LayerGroup(_scene_layers(live, dates[-1] if dates else None), id="imagery"),
            dl.GeoJSON(data=footprints(index), id="footprints", options={"style": FOOTPRINT_STYLE}, interactive=False),
            dl.LayerGroup(id="change-layers"),
            dl.GeoJSON(id="hits-layer", options={"style": HIT_STYLE}, interactive=False),
            dl.GeoJSON(id="query-layer", options={"style": QUERY_STYLE}, interactive=False),
            dl.FeatureGroup([dl.EditControl(id="draw", draw={"rectangle": True, "polygon": False, "polyline": False, "circle": False,
                                                              "marker": False, "circlemarker": False}, position="topleft")]),  # fmt: skip
            dl.ScaleControl(position="bottomleft"),
        ],
        id="map", center=[(south + north) / 2, (west + east) / 2], zoom=_fit_zoom(west, south, east, north), maxZoom=22, style=CSS["map"],
    )  # fmt: skip
    app.layout = html.Div([side, the_map], style=CSS["page"])

    @app.callback(Output("imagery", "children"), Input("date", "value"))
    def show_date(date):
        return _scene_layers(live, None if date == "all" else date)

    @app.callback(Output("change-layers", "children"), Output("status", "children", allow_duplicate=True),
                  Output("results", "children", allow_duplicate=True), Output("hits-layer", "data", allow_duplicate=True),
                  Output("query-layer", "data", allow_duplicate=True), Output("query", "data", allow_duplicate=True),
                  Input("mode", "value"), Input("before", "value"), Input("after", "value"), prevent_initial_call=True)  # fmt: skip
    def show_change(mode, before, after):
        cleared = [], None, None, None  # a new view starts without the other view's results
        if mode != "change":
            return [], "Click the map to search with the patch under the click.", *cleared
        try:
            change = live.change((before, after))
        except RscbirError as exc:
            return [], f"Error: {exc}", *cleared
        s = change.geojson["change"]
        layers = [dl.TileLayer(url=f"/api/change-tiles/{before}/{after}/{{z}}/{{x}}/{{y}}.png", opacity=0.55, maxZoom=22,
                               bounds=extent, className="change-scores"),
                  dl.GeoJSON(data=change.geojson, options={"style": CHANGE_STYLE}, interactive=False, id="change-areas")]  # fmt: skip
        text = (f"Change {before} -> {after}: {s['changed_patches']} of {s['patches']} patches changed "
                f"({s['method']} > {s['threshold']:.3f}). Click a place to find others that changed like it.")  # fmt: skip
        return layers, html.Span(text, id="change-summary"), *cleared

    @app.callback(
        Output("results", "children"), Output("hits-layer", "data"), Output("query-layer", "data"), Output("hits", "data"),
        Output("query", "data"), Output("marks", "data", allow_duplicate=True), Output("status", "children"),
        Input("map", "n_clicks"), Input("rerun", "n_clicks"),  # n_clicks: a second click on the same spot asks again
        State("map", "clickData"), State("query", "data"), State("marks", "data"), State("mode", "value"), State("date", "value"), State("k", "value"),
        State("use-bbox", "value"), State("draw", "geojson"), State("before", "value"), State("after", "value"),
        prevent_initial_call=True,
    )  # fmt: skip
    def search(_clicks, _rerun, click, asked, marks, mode, date, k, use_bbox, drawn, before, after):
        if ctx.triggered_id == "map" and click:
            lat, lon = _latlng(click)
            asked = {"lon": lon, "lat": lat, "mode": mode, "date": None if date == "all" else date}
            marks = {"positives": [], "negatives": []}
        elif not asked:
            return dash.no_update, dash.no_update, dash.no_update, dash.no_update, dash.no_update, dash.no_update, "Click the map first."
        k = int(k or 10)
        bbox = _bbox(drawn) if use_bbox else None
        try:
            if asked["mode"] == "change":
                doc = change_query(live.get(), asked["lon"], asked["lat"], (before, after), k)
            else:
                positives, negatives = list(marks["positives"]), list(marks["negatives"])
                if negatives and not positives:
                    positives = [asked["patch_id"]] if asked.get("patch_id") else []  # the example itself is right
                doc = point_query(live.get(), asked["lon"], asked["lat"], k, query_date=asked["date"], bbox=bbox,
                                  positives=positives, negatives=negatives)  # fmt: skip
        except RscbirError as exc:
            return [], None, None, None, asked, marks, f"Error: {exc}"
        asked["patch_id"] = doc["query"].get("patch_id")
        query_shape = doc["query"].get("geometry")
        query_layer = {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": query_shape, "properties": {}}]} if query_shape else None
        rounds = "" if not (marks["positives"] or marks["negatives"]) else \
            f" after feedback ({len(marks['positives'])} right, {len(marks['negatives'])} wrong)"
        # the list and the map show the new answers; the marks used ride along in the download (label 1 / 0)
        answers = {**doc, "features": [f for f in doc["features"] if f["properties"].get("label") is None]}
        status = f"{len(answers['features'])} results for {asked['patch_id']}{rounds}."
        return _result_rows(answers, marks), answers, query_layer, doc, asked, marks, html.Span(status, id="search-summary")

    @app.callback(Output("marks", "data"), Output({"type": "result", "patch": ALL}, "style"),
                  Input({"type": "mark", "patch": ALL, "label": ALL}, "n_clicks"),
                  State("marks", "data"), State({"type": "result", "patch": ALL}, "id"), prevent_initial_call=True)  # fmt: skip
    def mark(clicks, marks, rows):
        if not ctx.triggered_id or not any(clicks):
            raise dash.exceptions.PreventUpdate
        pid, label = ctx.triggered_id["patch"], ctx.triggered_id["label"]
        positives = [p for p in marks["positives"] if p != pid] + ([pid] if label == "right" else [])
        negatives = [p for p in marks["negatives"] if p != pid] + ([pid] if label == "wrong" else [])
        marks = {"positives": positives, "negatives": negatives}
        styles = [{**CSS["result"], "background": MARK_COLOURS["right" if r["patch"] in positives else "wrong" if r["patch"] in negatives else None]}
                  for r in rows]  # fmt: skip
        return marks, styles

    @app.callback(Output("map", "viewport"), Input({"type": "go", "patch": ALL}, "n_clicks"),
                  Input({"type": "go-text", "patch": ALL}, "n_clicks"), State("hits", "data"), prevent_initial_call=True)  # fmt: skip
    def fly(images, texts, doc):
        if not ctx.triggered_id or not doc or not any([*images, *texts]):
            raise dash.exceptions.PreventUpdate
        for feature in doc["features"]:
            if feature["properties"]["patch_id"] == ctx.triggered_id["patch"]:
                return {"center": list(_centre(feature)), "zoom": 16, "transition": "flyTo"}
        raise dash.exceptions.PreventUpdate

    @app.callback(Output("download", "data"), Input("download-button", "n_clicks"), State("hits", "data"), prevent_initial_call=True)
    def download(_clicks, doc):
        if not doc:
            raise dash.exceptions.PreventUpdate
        return {"content": json.dumps(doc), "filename": "rscbir_results.geojson", "type": "application/geo+json"}

    return app



class Server:
    """The app of an index behind waitress: a fixed pool of worker threads, so each keeps its PROJ
    context between requests (a new thread per request, as werkzeug's server does, pays ~25 ms for it)."""

    def __init__(self, index_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, threads: int = 8) -> None:
        from waitress.server import create_server

        self.host = host
        app = create_app(index_dir).server
        try:
            self._server = create_server(app, host=host, port=port, threads=threads, ident="rscbir")
        except OSError as exc:
            reason = {errno.EADDRINUSE: "the port is busy: another program listens there",
                      errno.EACCES: "this user may not open that port", errno.EADDRNOTAVAIL: "not an address of this machine",
                      }.get(exc.errno, exc.strerror or str(exc))  # fmt: skip
            raise PortError(f"cannot listen on {host}:{port} ({reason}); pick another with --port (--port 0: any free port)") from None

    @property
    def port(self) -> int:
        return self._server.effective_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def serve_forever(self) -> None:
        self._server.run()

    def shutdown(self) -> None:
        self._server.close()


def make_server(index_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, threads: int = 8) -> Server:
    """A server for the app of ``index_dir`` (``port=0`` picks a free port); call ``serve_forever()``."""
    return Server(index_dir, host, port, threads)

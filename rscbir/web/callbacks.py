"""The callbacks of ``rscbir serve``'s page: date and view switches, search by click, marks, fly-to, download."""

from __future__ import annotations

import json

import dash
import dash_leaflet as dl
from dash import ALL, Input, Output, State, ctx, html

from rscbir.errors import RscbirError
from rscbir.web.api import LiveIndex, change_query, point_query, taught_change
from rscbir.change.series import place_history
from rscbir.web.layout import (CHANGE_STYLE, CSS, MARK_ACTIONS, MARK_COLOURS, change_mark_layers, map_extent, result_rows, scene_layers,
                               when_panel)  # fmt: skip


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


def register_callbacks(app: dash.Dash, live: LiveIndex) -> None:
    """Wire the page's controls to the index ``live`` serves."""
    register_view_callbacks(app, live)
    register_search_callbacks(app, live)
    register_change_mark_callbacks(app, live)
    register_result_callbacks(app)


def register_view_callbacks(app: dash.Dash, live: LiveIndex) -> None:
    """The imagery date and the change view."""
    extent = map_extent(live)

    @app.callback(Output("imagery", "children"), Input("date", "value"))
    def show_date(date):
        return scene_layers(live, None if date == "all" else date)

    @app.callback(Output("change-layers", "children"), Output("status", "children", allow_duplicate=True),
                  Output("results", "children", allow_duplicate=True), Output("hits-layer", "data", allow_duplicate=True),
                  Output("query-layer", "data", allow_duplicate=True), Output("query", "data", allow_duplicate=True),
                  Output("change-marks", "data", allow_duplicate=True), Output("change-marks-layer", "children", allow_duplicate=True),
                  Output("change-doc", "data", allow_duplicate=True),
                  Input("mode", "value"), Input("before", "value"), Input("after", "value"), Input("pixel-level", "value"),
                  prevent_initial_call=True)  # fmt: skip
    def show_change(mode, before, after, pixel):
        cleared = [], None, None, None, [], [], None  # a new view (or pair) starts without results or marks
        if mode != "change":
            return [], "Click the map to search with the patch under the click.", *cleared
        try:
            change = live.pixel_change((before, after)) if pixel else live.change((before, after))
        except RscbirError as exc:
            return [], f"Error: {exc}", *cleared
        text = f"Change {before} -> {after}: {_changed(change.geojson)}. Click a place to find others that changed like it, or mark it."
        return change_layers(before, after, change.geojson, extent, bool(pixel)), html.Span(text, id="change-summary"), *cleared[:-1], change.geojson


def _changed(doc: dict) -> str:
    s = doc["change"]
    unit = "pixels" if s["level"] == "pixel" else "patches"
    return f"{s['changed_' + unit]} of {s[unit]} {unit} changed ({s['method']} > {s['threshold']:.3g})"


def change_layers(before: str, after: str, doc: dict, extent, pixel: bool = False) -> list:
    """The change view's layers: the score tiles and the changed areas of ``doc`` (marks are drawn apart)."""
    areas = {**doc, "features": [f for f in doc["features"] if not f["properties"].get("mark")]}
    level = f"?level=pixel&v={len(doc['features'])}-{doc['change'].get('changed_pixels')}" if pixel else ""  # a new map: new tile URLs
    return [dl.TileLayer(url=f"/api/change-tiles/{before}/{after}/{{z}}/{{x}}/{{y}}.png{level}", opacity=0.55, maxZoom=22,
                         bounds=extent, className="change-scores"),
            dl.GeoJSON(data=areas, options={"style": CHANGE_STYLE}, interactive=False, id="change-areas")]  # fmt: skip


def register_change_mark_callbacks(app: dash.Dash, live: LiveIndex) -> None:
    """Marks on the change view: a click marks "changed here" / "not changed here"; "Update change map" teaches the map."""
    extent = map_extent(live)

    @app.callback(Output("change-marks", "data"), Output("change-marks-layer", "children"), Output("status", "children", allow_duplicate=True),
                  Input("map", "n_clicks"), State("map", "clickData"), State("mode", "value"), State("click-action", "value"),
                  State("change-marks", "data"), prevent_initial_call=True)  # fmt: skip
    def add_mark(_clicks, click, mode, action, marks):
        if mode != "change" or action not in MARK_ACTIONS or not click:
            raise dash.exceptions.PreventUpdate
        lat, lon = _latlng(click)
        marks = [*marks, {"lon": lon, "lat": lat, "changed": int(action == "changed")}]
        changed = sum(m["changed"] for m in marks)
        text = f"{len(marks)} marks ({changed} changed, {len(marks) - changed} not changed): press Update change map."
        return marks, change_mark_layers(marks), html.Span(text, id="marks-summary")

    @app.callback(Output("when-panel", "children"), Output("status", "children", allow_duplicate=True),
                  Input("map", "n_clicks"), State("map", "clickData"), State("mode", "value"), State("click-action", "value"),
                  prevent_initial_call=True)  # fmt: skip
    def when_changed(_clicks, click, mode, action):
        if mode != "change" or action != "when" or not click:
            raise dash.exceptions.PreventUpdate
        lat, lon = _latlng(click)
        try:
            history = place_history(live.series(), lon, lat)
        except RscbirError as exc:
            return [], f"Error: {exc}"
        text = f"Place at row {history['row']}, col {history['col']} over {len(history['dates'])} dates."
        return when_panel(history), html.Span(text, id="when-status")

    @app.callback(Output("change-layers", "children", allow_duplicate=True), Output("status", "children", allow_duplicate=True),
                  Output("change-doc", "data", allow_duplicate=True), Input("update-change", "n_clicks"),
                  State("change-marks", "data"), State("before", "value"), State("after", "value"), State("pixel-level", "value"),
                  prevent_initial_call=True)  # fmt: skip
    def update_change(_clicks, marks, before, after, pixel):
        if not marks:
            return dash.no_update, "Mark a place first: choose a marks option and click the map.", dash.no_update
        try:
            if pixel:
                doc = live.pixel_change((before, after), marks).geojson
            else:
                doc = taught_change(live.change((before, after)), marks)
        except RscbirError as exc:
            return dash.no_update, f"Error: {exc}", dash.no_update
        text = f"Change {before} -> {after} after {len(marks)} marks: {_changed(doc)}."
        return change_layers(before, after, doc, extent, bool(pixel)), html.Span(text, id="taught-summary"), doc

    @app.callback(Output("download-change-file", "data"), Input("download-change", "n_clicks"), State("change-doc", "data"),
                  prevent_initial_call=True)  # fmt: skip
    def download_change(_clicks, doc):
        if not doc:
            raise dash.exceptions.PreventUpdate
        return {"content": json.dumps(doc), "filename": "rscbir_change.geojson", "type": "application/geo+json"}


def register_search_callbacks(app: dash.Dash, live: LiveIndex) -> None:
    """A click on the map (or "Search again with marks") asks the index."""
    @app.callback(
        Output("results", "children"), Output("hits-layer", "data"), Output("query-layer", "data"), Output("hits", "data"),
        Output("query", "data"), Output("marks", "data", allow_duplicate=True), Output("status", "children"),
        Input("map", "n_clicks"), Input("rerun", "n_clicks"),  # n_clicks: a second click on the same spot asks again
        State("map", "clickData"), State("query", "data"), State("marks", "data"), State("mode", "value"), State("date", "value"), State("k", "value"),
        State("use-bbox", "value"), State("draw", "geojson"), State("before", "value"), State("after", "value"),
        State("click-action", "value"), prevent_initial_call=True,
    )  # fmt: skip
    def search(_clicks, _rerun, click, asked, marks, mode, date, k, use_bbox, drawn, before, after, action):
        if ctx.triggered_id == "map" and mode == "change" and action != "similar":
            raise dash.exceptions.PreventUpdate  # the click is a change mark (register_change_mark_callbacks)
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
        return result_rows(answers, marks), answers, query_layer, doc, asked, marks, html.Span(status, id="search-summary")


def register_result_callbacks(app: dash.Dash) -> None:
    """Marks on the results, fly-to and the GeoJSON download."""
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


__all__ = ["change_layers", "register_callbacks", "register_change_mark_callbacks", "register_result_callbacks", "register_search_callbacks", "register_view_callbacks"]

"""``rscbir serve``: the JSON API (Flask test client), a load test on loopback, and the page in a real browser."""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import morecantile
import numpy as np
import pytest
import shapely
from click.testing import CliRunner
from PIL import Image

from rscbir.cli import cli
from rscbir.index import Index, remove_from_index
from rscbir.web.page import create_app, make_server

pytestmark = pytest.mark.realdata
POINT = (-99.1329, 47.0294)  # a lake shore inside both NAIP years
DATES = "20090818,20200831"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def client(naip_index):
    return create_app(naip_index).server.test_client()


def _query_cli(index, *args) -> dict:
    result = CliRunner().invoke(cli, ["query", str(index), *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_api_query_answers_what_the_cli_answers(client, naip_index):
    answer = client.get(f"/api/query?lon={POINT[0]}&lat={POINT[1]}&k=8&exclude_radius=300")
    assert answer.status_code == 200 and answer.mimetype == "application/geo+json"
    doc = answer.get_json(force=True)
    cli_doc = _query_cli(naip_index, "--lonlat", str(POINT[0]), str(POINT[1]), "-k", "8", "--exclude-radius", "300")
    assert [f["properties"]["patch_id"] for f in doc["features"]] == [f["properties"]["patch_id"] for f in cli_doc["features"]]
    assert np.allclose([f["properties"]["score"] for f in doc["features"]], [f["properties"]["score"] for f in cli_doc["features"]], atol=1e-6)
    assert [f["properties"]["rank"] for f in doc["features"]] == list(range(1, 9))
    query_shape = shapely.geometry.shape(doc["query"]["geometry"])
    assert query_shape.contains(shapely.Point(POINT))  # lon/lat order: EPSG:4326 as RFC 7946 says
    for feature in doc["features"]:
        assert shapely.geometry.shape(feature["geometry"]).distance(query_shape.centroid) * 111_000 > 300 * 0.5


def test_api_bbox_keeps_results_inside_the_box(client):
    box = (-99.16, 47.01, -99.14, 47.03)
    doc = client.get(f"/api/query?lon={POINT[0]}&lat={POINT[1]}&k=5&bbox={','.join(map(str, box))}").get_json(force=True)
    assert len(doc["features"]) == 5
    assert all(shapely.geometry.shape(f["geometry"]).intersects(shapely.box(*box)) for f in doc["features"])


def test_api_date_filter_and_feedback(client):
    doc = client.get(f"/api/query?lon={POINT[0]}&lat={POINT[1]}&k=6&date=20090818").get_json(force=True)
    assert {f["properties"]["date"] for f in doc["features"]} == {"2009-08-18"}
    ids = [f["properties"]["patch_id"] for f in doc["features"]]
    marked = client.get(f"/api/query?lon={POINT[0]}&lat={POINT[1]}&k=6&date=20090818&positive={ids[1]}&negative={ids[2]}").get_json(force=True)
    again = [f["properties"]["patch_id"] for f in marked["features"] if f["properties"]["label"] is None]
    assert ids[2] not in again and again != ids  # the patch marked wrong is not shown again
    assert {f["properties"]["patch_id"]: f["properties"]["label"] for f in marked["features"] if f["properties"]["label"] is not None} \
        == {ids[1]: 1, ids[2]: 0}  # the marks come back as marks, not as answers
    assert marked["query"]["feedback"] == {"positives": [ids[1]], "negatives": [ids[2]]}


@pytest.mark.parametrize(
    "url, status, words",
    [
        ("/api/query?lon=-99.13", 400, "missing parameter 'lat'"),
        ("/api/query?lon=-99.13&lat=47.02&k=ten", 400, "'k' must be an integer"),
        ("/api/query?lon=-99.13&lat=nan", 400, "must be finite"),
        ("/api/query?lon=-99.13&lat=47.02&bbox=1,2,3", 400, "bbox must be W,S,E,N"),
        ("/api/query?lon=2.35&lat=48.85", 404, "outside every indexed patch"),
        ("/api/query?lon=-99.13&lat=47.02&date=19990101", 404, "no patch of date 1999-01-01"),
        ("/api/query?lon=-99.13&lat=47.02&negative=x:1:1", 400, "mark at least one patch right"),
        ("/api/query-change?lon=-99.13&lat=47.02&dates=20090818,20090818", 400, "two different dates"),
        ("/api/change?dates=20090818", 400, "two dates"),
        ("/api/tiles/no_such_scene/14/3680/5760.png", 404, "no scene 'no_such_scene'"),
        ("/api/tilejson/no_such_scene.json", 404, "no scene 'no_such_scene'"),
        ("/api/tilejson/change/20090818/19990101.json", 400, "no scene of date 1999-01-01"),
        ("/api/tiles/..%2F..%2F..%2Fetc%2Fpasswd/14/3680/5760.png", 404, "no API endpoint"),
        ("/api/tiles/x/..%2F..%2F..%2Fetc%2Fpasswd", 404, "no API endpoint"),
        ("/api/tiles/m_4709963_se_14_1_20090818/14/1/1.png", 404, "outside"),
        ("/api/thumbs/nope:0:0.png", 404, "no patch"),
    ],
)
def test_bad_requests_answer_json_errors_never_a_traceback(client, url, status, words):
    answer = client.get(url)
    assert answer.status_code == status, answer.get_data(as_text=True)
    body = answer.get_json(force=True)
    assert words in body["error"] and "Traceback" not in body["error"]


def test_no_path_reaches_a_file_outside_the_index(client):
    for url in ("/api/tiles/../../../../etc/passwd", "/api/thumbs/../../../../etc/passwd", "/api/tiles/%2E%2E/%2E%2E/etc/passwd/1/1/1.png"):
        answer = client.get(url)
        assert "root:" not in answer.get_data(as_text=True)


def _tile_of(z: int, lon: float, lat: float):
    return morecantile.tms.get("WebMercatorQuad").tile(lon, lat, z)


def test_tiles_show_the_scene_where_it_is(client, naip_index):
    index = Index.open(naip_index)
    west, south, east, north = index.catalog.total_bounds
    tile = _tile_of(15, (west + east) / 2, (south + north) / 2)
    images = []
    for scene in ("m_4709963_se_14_1_20090818", "m_4709963_se_14_1_20200831"):
        answer = client.get(f"/api/tiles/{scene}/{tile.z}/{tile.x}/{tile.y}.png")
        assert answer.status_code == 200 and answer.mimetype == "image/png"
        image = np.asarray(Image.open(io.BytesIO(answer.data)).convert("RGBA"))
        assert image.shape == (256, 256, 4) and (image[..., 3] == 255).all()  # the scene covers this tile
        images.append(image[..., :3].astype(float))
    assert images[0].std() > 5 and np.abs(images[0] - images[1]).mean() > 3  # real imagery, two different years
    edge = _tile_of(13, west, north)  # the north-west corner: part scene, part transparent
    alpha = np.asarray(Image.open(io.BytesIO(client.get(f"/api/tiles/m_4709963_se_14_1_20090818/{edge.z}/{edge.x}/{edge.y}.png").data)).convert("RGBA"))[..., 3]
    assert 0 < (alpha > 0).mean() < 1


def test_change_view_matches_rscbir_change(client, naip_index, tmp_path):
    doc = client.get(f"/api/change?dates={DATES}").get_json(force=True)
    out = tmp_path / "change.geojson"
    result = CliRunner().invoke(cli, ["change", "--index", str(naip_index), "--dates", "20090818", "20200831", "--method", "cosine", "-o", str(out)])
    assert result.exit_code == 0, result.output
    expected = json.loads(out.read_text())
    assert doc["change"]["changed_patches"] == expected["change"]["changed_patches"] > 0
    assert all(shapely.geometry.shape(f["geometry"]).is_valid for f in doc["features"])
    west, south, east, north = Index.open(naip_index).catalog.total_bounds
    tile = _tile_of(14, (west + east) / 2, (south + north) / 2)
    answer = client.get(f"/api/change-tiles/20090818/20200831/{tile.z}/{tile.x}/{tile.y}.png")
    assert answer.status_code == 200 and answer.mimetype == "image/png"
    hits = client.get(f"/api/query-change?lon={POINT[0]}&lat={POINT[1]}&dates={DATES}&k=5").get_json(force=True)
    assert len(hits["features"]) == 5 and hits["features"][0]["properties"]["date"] == "2009-08-18/2020-08-31"


def test_when_did_this_place_change_answers_what_the_cli_writes(client, naip_index, tmp_path):
    history = client.get(f"/api/when?lon={POINT[0]}&lat={POINT[1]}").get_json(force=True)
    assert history["dates"] == ["2009-08-18", "2020-08-31"] and history["intervals"] == ["2009-08-18/2020-08-31"]
    assert shapely.geometry.shape(history["geometry"]).contains(shapely.Point(*POINT))
    out = tmp_path / "when.geojson"
    result = CliRunner().invoke(cli, ["change", "--index", str(naip_index), "--all-patches", "-o", str(out)])
    assert result.exit_code == 0, result.output
    place = next(f["properties"] for f in json.loads(out.read_text())["features"]
                 if (f["properties"]["row"], f["properties"]["col"]) == (history["row"], history["col"]))  # fmt: skip
    assert history["scores"] == [pytest.approx(place["score 2009-08-18/2020-08-31"])]
    assert history["changed_between"] == place["changed_between"] and history["cut"] == 3.0
    answer = client.get("/api/when?lon=2.35&lat=48.85")
    assert answer.status_code == 404 and "outside every place" in answer.get_json(force=True)["error"]


def test_change_marks_teach_the_map_as_the_cli_does(client, naip_index, tmp_path):
    plain = client.get(f"/api/change?dates={DATES}").get_json(force=True)
    area = shapely.geometry.shape(plain["features"][0]["geometry"]).representative_point()  # the top changed area
    taught = client.get(f"/api/change?dates={DATES}&marks={area.x},{area.y},0").get_json(force=True)
    assert taught["change"]["method"] == "taught" and taught["change"]["changed_patches"] < plain["change"]["changed_patches"]
    areas = [shapely.geometry.shape(f["geometry"]) for f in taught["features"] if not f["properties"].get("mark")]
    assert not any(a.contains(area) for a in areas)  # the marked area is gone
    assert [f["properties"] for f in taught["features"] if f["properties"].get("mark")] == [{"mark": True, "changed": 0}]
    marks = tmp_path / "marks.geojson"
    marks.write_text(json.dumps(taught))  # the page's "Download change map": areas and marks; the CLI reads its marks back
    out = tmp_path / "taught.geojson"
    result = CliRunner().invoke(cli, ["change", "--index", str(naip_index), "--dates", "20090818", "20200831", "--method", "cosine",
                                      "--marks", str(marks), "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["change"]["changed_patches"] == taught["change"]["changed_patches"]
    assert client.get(f"/api/change?dates={DATES}").get_json(force=True)["change"]["changed_patches"] == plain["change"]["changed_patches"]
    for bad, words in ((f"{area.x},{area.y},maybe", "LON,LAT,1"), ("0,0,1", "lies on the pair")):
        answer = client.get(f"/api/change?dates={DATES}&marks={bad}")
        assert answer.status_code in (400, 404) and words in answer.get_json(force=True)["error"]


def test_an_edit_of_the_index_shows_on_the_next_request(naip_index, tmp_path):
    copy = tmp_path / "naip_index"
    shutil.copytree(naip_index, copy)
    client = create_app(copy).server.test_client()
    assert client.get("/api/info").get_json()["patches"] == 308
    assert client.get(f"/api/query?lon={POINT[0]}&lat={POINT[1]}&date=20090818").status_code == 200
    remove_from_index(copy, dates=["20090818"])
    assert client.get("/api/info").get_json()["patches"] == 154
    answer = client.get(f"/api/query?lon={POINT[0]}&lat={POINT[1]}&date=20090818")
    assert answer.status_code == 404 and "2009-08-18" in answer.get_json()["error"]


@pytest.fixture(scope="module")
def server(naip_index):
    """The real server on a free loopback port, in a thread."""
    running = make_server(naip_index, "127.0.0.1", 0)
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    yield running.url.rstrip("/")
    running.shutdown()


def test_tilejson_gives_qgis_a_url_whose_tiles_are_the_layer(server):
    """TileJSON 3.0.0 for a scene's imagery and for the change layer: the XYZ template, filled in, serves the tiles."""
    for url in (f"{server}/api/tilejson/m_4709963_se_14_1_20200831.json", f"{server}/api/tilejson/change/20090818/20200831.json"):
        doc = json.loads(urllib.request.urlopen(url, timeout=120).read())
        assert doc["tilejson"] == "3.0.0" and doc["minzoom"] <= doc["center"][2] <= doc["maxzoom"]
        west, south, east, north = doc["bounds"]
        assert west < POINT[0] < east and south < POINT[1] < north
        tile = _tile_of(doc["maxzoom"], doc["center"][0], doc["center"][1])  # a tile well inside the layer
        template = doc["tiles"][0]
        assert template.startswith(server + "/api/") and "{z}/{x}/{y}" in template  # absolute: QGIS fetches it as given
        with urllib.request.urlopen(template.format(z=tile.z, x=tile.x, y=tile.y), timeout=120) as answer:
            assert answer.status == 200 and answer.headers["Content-Type"] == "image/png"
            image = np.asarray(Image.open(io.BytesIO(answer.read())).convert("RGBA"))
        assert image.shape == (256, 256, 4) and (image[..., 3] == 255).mean() > 0.9 and image[..., :3].std() > 5


def test_serve_on_a_busy_port_says_so_in_one_line(naip_index):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", str(naip_index), "--port", str(port)])
    assert result.exit_code == 2, result.output
    assert f"127.0.0.1:{port} (the port is busy" in result.output and "nothing was written" not in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_load_8_threads_x_50_queries_all_succeed(server, naip_index):
    bounds = Index.open(naip_index).catalog.geometry.bounds.to_numpy()
    centres = (bounds[:, :2] + bounds[:, 2:]) / 2  # box centres: patches are small
    rng = np.random.default_rng(0)
    points = [tuple(centres[i]) for i in rng.integers(0, len(centres), 400)]

    def ask(point):
        with urllib.request.urlopen(f"{server}/api/query?lon={point[0]}&lat={point[1]}&k=10", timeout=60) as answer:
            return answer.status, len(json.loads(answer.read())["features"])

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, points))
    assert answers == [(200, 10)] * 400


# ------------------------------------------------------------------ a real browser
def _browser():
    """Debian's chromium driven by Playwright; skipped only outside CI, where `make test` installs it."""
    chromium = os.environ.get("RSCBIR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        chromium = None
    if chromium is None:
        message = "no chromium or playwright: `make test` installs Debian's chromium as root (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return chromium


def _on_screen(box: dict, index_dir, lon: float, lat: float) -> tuple[float, float]:
    """Where LON LAT lies on the page's map as it first opens (centred on the index, at its fitted zoom)."""
    from rscbir.web.layout import fit_zoom

    west, south, east, north = Index.open(index_dir).bounds
    scale = 256 * 2 ** fit_zoom(west, south, east, north)

    def pixel(x, y):
        return (x + 180) / 360 * scale, (1 - np.log(np.tan(np.radians(y)) + 1 / np.cos(np.radians(y))) / np.pi) / 2 * scale

    cx, cy = pixel((west + east) / 2, (south + north) / 2)
    px, py = pixel(lon, lat)
    return box["x"] + box["width"] / 2 + px - cx, box["y"] + box["height"] / 2 + py - cy


def test_page_in_a_real_browser(server, naip_index, tmp_path):
    chromium = _browser()
    from playwright.sync_api import sync_playwright

    outside, errors = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((server, "data:", "blob:")) else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server + "/")
        page.wait_for_selector(".imagery img.leaflet-tile-loaded", timeout=60_000)  # the 2020 imagery is drawn
        box = page.locator("#map").bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
        page.wait_for_selector("#search-summary", timeout=60_000)
        first = page.locator(".result small").all_inner_texts()  # the patch ids, in rank order
        assert len(first) == 10 and page.locator(".result").first.inner_text().startswith("#1")
        page.wait_for_function("() => [...document.querySelectorAll('.result img')].every(i => i.complete && i.naturalWidth > 0)")
        page.screenshot(path=str(tmp_path / "search.png"))
        page.locator(".mark-wrong").nth(1).click()  # result #2 is wrong
        page.click("#rerun")
        page.wait_for_function("() => document.querySelector('#search-summary').innerText.includes('1 wrong')", timeout=60_000)
        second = page.locator(".result small").all_inner_texts()
        assert len(second) == 10 and first[1] not in second  # the result marked wrong is gone, others took its place
        page.locator("input[name='mode'][value='change']").click()
        page.wait_for_selector("#change-summary", timeout=60_000)
        page.wait_for_selector(".change-scores img.leaflet-tile-loaded", timeout=60_000)
        assert "patches changed" in page.inner_text("#change-summary")
        page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)  # places that changed like this one
        page.wait_for_selector("#search-summary", timeout=60_000)
        dates = [text.split("\n")[1] for text in page.locator(".result").all_inner_texts()]
        assert len(dates) == 10 and set(dates) == {"2009-08-18/2020-08-31"}
        page.wait_for_timeout(1000)  # the change tiles settle
        page.screenshot(path=str(tmp_path / "change.png"))
        # teach the change map: "not changed here" on its top changed area, then "Update change map"
        plain = json.loads(urllib.request.urlopen(f"{server}/api/change?dates={DATES}").read())
        top = shapely.geometry.shape(plain["features"][0]["geometry"]).representative_point()
        page.locator("input[name='click-action'][value='unchanged']").click()
        page.mouse.click(*_on_screen(box, naip_index, top.x, top.y))
        page.wait_for_selector("path.change-mark", timeout=30_000)
        page.click("#update-change")
        page.wait_for_selector("#taught-summary", timeout=60_000)
        changed = int(page.inner_text("#taught-summary").split("marks: ")[1].split(" of ")[0])
        assert changed < plain["change"]["changed_patches"]  # the marked area left the map
        page.screenshot(path=str(tmp_path / "change_marks.png"))
        page.locator("input[name='click-action'][value='when']").click()  # when did this place change? its score per step
        page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
        page.wait_for_selector("#when-plot .js-plotly-plot .bars path", timeout=60_000)
        assert page.locator("#when-plot .bars path").count() == 1  # two dates: one step
        assert page.inner_text("#when-summary").startswith(("Changed most between", "No step stands out"))
        page.locator(".result img").nth(2).click()  # fly to a result: the map zooms to 16 over it
        page.wait_for_selector(".imagery img.leaflet-tile-loaded[src*='/16/']", timeout=30_000)
        # pixel detail: the map from the rasters, pixel by pixel, and a mark on it
        pixels = json.loads(urllib.request.urlopen(f"{server}/api/change?dates={DATES}&level=pixel", timeout=600).read())
        page.goto(server + "/")  # afresh: the map at its first view
        page.wait_for_selector(".imagery img.leaflet-tile-loaded", timeout=60_000)
        page.locator("input[name='mode'][value='change']").click()
        page.locator("input[name='click-action'][value='unchanged']").click()
        page.locator("#pixel-level input").click()
        page.wait_for_function("() => (document.querySelector('#change-summary') || {}).innerText?.includes('pixels changed')", timeout=300_000)
        page.wait_for_selector(".change-scores img.leaflet-tile-loaded[src*='level=pixel']", timeout=60_000)
        top = shapely.geometry.shape(pixels["features"][0]["geometry"]).representative_point()
        page.mouse.click(*_on_screen(box, naip_index, top.x, top.y))
        page.wait_for_selector("path.change-mark", timeout=30_000)
        page.click("#update-change")
        page.wait_for_function("() => (document.querySelector('#taught-summary') || {}).innerText?.includes('pixels changed')", timeout=120_000)
        changed = int(page.inner_text("#taught-summary").split("marks: ")[1].split(" of ")[0])
        assert changed < pixels["change"]["changed_pixels"]
        page.wait_for_timeout(1000)
        page.screenshot(path=str(tmp_path / "change_pixels.png"))
        browser.close()
    assert outside == [], f"the page fetched from outside the app: {outside[:3]}"
    assert errors == []
    if os.environ.get("RSCBIR_SCREENSHOTS"):  # `make screenshots` refreshes the README's pictures
        for name in ("search.png", "change.png", "change_marks.png", "change_pixels.png"):
            shutil.copy(tmp_path / name, Path(os.environ["RSCBIR_SCREENSHOTS"]) / f"serve_{name}")


def test_when_did_this_place_change_over_ten_dates_in_a_real_browser(naip10_index, tmp_path):
    """The 10 NAIP dates: a click with "when" on the place that changed most plots its 9 steps, as /api/when says."""
    chromium = _browser()
    from playwright.sync_api import sync_playwright

    from rscbir.change.series import series_change

    found = series_change(Index.open(naip10_index))
    strongest = found.places.sort_values("step_score", ascending=False).iloc[0]
    lon, lat = strongest.geometry.representative_point().coords[0]
    running = make_server(naip10_index, "127.0.0.1", 0)
    threading.Thread(target=running.serve_forever, daemon=True).start()
    url = running.url.rstrip("/")
    try:
        expected = json.loads(urllib.request.urlopen(f"{url}/api/when?lon={lon}&lat={lat}", timeout=120).read())
        assert len(expected["scores"]) == 9 and expected["row"] == strongest["row"] and expected["col"] == strongest["col"]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url + "/")
            page.wait_for_selector(".imagery img.leaflet-tile-loaded", timeout=60_000)
            box = page.locator("#map").bounding_box()
            page.locator("input[name='mode'][value='change']").click()
            page.wait_for_selector("#change-summary", timeout=120_000)
            page.locator("input[name='click-action'][value='when']").click()
            page.mouse.click(*_on_screen(box, naip10_index, lon, lat))
            page.wait_for_selector("#when-plot .js-plotly-plot .bars path", timeout=120_000)
            assert page.locator("#when-plot .bars path").count() == sum(s is not None for s in expected["scores"]) == 9
            worst = expected["intervals"][int(np.nanargmax([s if s is not None else np.nan for s in expected["scores"]]))]
            summary = page.inner_text("#when-summary")
            assert summary.startswith(("Changed most between", "No step stands out")) and worst.split("/")[0] in summary
            page.wait_for_timeout(1000)
            page.screenshot(path=str(tmp_path / "when.png"))
            browser.close()
    finally:
        running.shutdown()
    if os.environ.get("RSCBIR_SCREENSHOTS"):
        shutil.copy(tmp_path / "when.png", Path(os.environ["RSCBIR_SCREENSHOTS"]) / "serve_when.png")

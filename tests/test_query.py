"""Queries on a small real index (NAIP 2009 and 2020, 320 m patches) and their outputs."""

import json

import geopandas as gpd
import numpy as np
import pytest
import shapely
from click.testing import CliRunner
from PIL import Image

from rscbir.cli import cli
from conftest import blob_image, write_raster
from rscbir.errors import QueryError
from rscbir.index import Index
from rscbir.query import Filters, QueryExpansion, patch_at, query_image, query_patch, query_point



def centre_of(index, patch_id):
    geometry = index.catalog.set_index("patch_id").loc[patch_id, "geometry"]
    return geometry.centroid.x, geometry.centroid.y


def test_point_query_returns_its_own_patch_first(naip_index):
    index = Index.open(naip_index)
    assert len(index) == 308 and index.manifest.grid is not None
    lon, lat = centre_of(index, "m_4709963_se_14_1_20090818:5:7")
    result = query_point(index, lon, lat, k=5, query_date="2009-08-18")
    assert list(result.hits["rank"]) == [1, 2, 3, 4, 5]
    # the expanded query ranks patches that look like the query patch: far closer to it than the index on average
    own = np.asarray(index.vectors[index.catalog.index[index.catalog["patch_id"] == "m_4709963_se_14_1_20090818:5:7"][0]], np.float32)
    hits = np.asarray(index.vectors[[index.catalog.index[index.catalog["patch_id"] == p][0] for p in result.hits["patch_id"]]], np.float32)
    assert (hits @ own).mean() > (np.asarray(index.vectors, np.float32) @ own).mean() + 0.2
    assert (np.diff(result.hits["score"]) <= 1e-6).all()
    assert result.query["expansion"] == {"k": 10, "alpha": 1.0} and index.manifest.augment == 5
    plain = query_point(index, lon, lat, k=5, query_date="2009-08-18", expansion=QueryExpansion(0))
    assert plain.hits.iloc[0]["patch_id"] == "m_4709963_se_14_1_20090818:5:7"


def test_same_place_other_year_ranks_far_above_chance(naip_index):
    """Querying each 2009 patch among the 2020 patches: the same ground ranks well above chance.

    Measured when written: median rank 20 of 154 (chance 77), 41 % in the top 10. Crops
    change between years, so this is a tendency, not a rule for every patch.
    """
    index = Index.open(naip_index)
    ranks = []
    for patch_id in index.catalog.loc[index.catalog["date"] == "2009-08-18", "patch_id"]:
        row, col = patch_id.split(":")[1:]
        result = query_patch(index, patch_id, k=154, filters=Filters(dates=("2020-08-31",)))
        ids = list(result.hits["patch_id"])
        ranks.append(ids.index(f"m_4709963_se_14_1_20200831:{row}:{col}") + 1)
    assert np.median(ranks) < 40 and np.mean(np.array(ranks) <= 10) > 0.25


def test_cli_geojson_valid_and_first_polygon_contains_point(naip_index, tmp_path):
    index = Index.open(naip_index)
    lon, lat = centre_of(index, "m_4709963_se_14_1_20200831:3:9")
    out = tmp_path / "hits.geojson"
    result = CliRunner().invoke(cli, ["query", str(naip_index), "--lonlat", str(lon), str(lat), "-k", "8", "-o", str(out),
                                      "--preview", str(tmp_path / "sheet.png"), "--html", str(tmp_path / "map.html")])  # fmt: skip
    assert result.exit_code == 0, result.output
    hits = gpd.read_file(out)
    assert hits.crs.to_epsg() == 4326 and len(hits) == 8
    assert hits.geometry.iloc[0].contains(shapely.Point(lon, lat))
    doc = json.loads(out.read_text())
    assert doc["query"]["patch_id"] == "m_4709963_se_14_1_20200831:3:9"
    with Image.open(tmp_path / "sheet.png") as sheet:  # the query and 8 hits: 6 columns of 128 px thumbnails, 2 rows
        assert sheet.size == (6 * 134 + 6, 2 * 150 + 6)
        pixels = np.asarray(sheet.convert("RGB"))
    assert pixels[6:134, 6:134].std() > 5  # the query thumbnail shows imagery, not a blank square
    page = (tmp_path / "map.html").read_text()
    assert "<script src=\"http" not in page and "<link" not in page  # plotly.js inlined: nothing to fetch


def test_html_map_opens_offline_in_a_real_browser(naip_index, tmp_path):
    """`query --html` in chromium with every request that is not the file itself refused: the hits, the query and
    their imagery are drawn, and nothing was asked of the network."""
    from test_serve import _browser

    chromium = _browser()
    from playwright.sync_api import sync_playwright

    page_file = tmp_path / "map.html"
    result = CliRunner().invoke(cli, ["query", str(naip_index), "--lonlat", "-99.1329", "47.0294", "-k", "6", "--exclude-radius", "500", "-o",
                                      str(tmp_path / "hits.geojson"), "--html", str(page_file)])  # fmt: skip
    assert result.exit_code == 0, result.output
    refused, errors = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:", "blob:"))
                   else (refused.append(route.request.url), route.abort()))  # fmt: skip
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_file.as_uri())
        page.wait_for_selector(".js-plotly-plot .scatterlayer .trace", timeout=60_000)
        assert sorted(page.locator(".legendtext").all_text_contents()) == ["query", "results"]
        assert page.locator(".imagelayer image").count() == 7  # 6 hits and the query, each its own imagery
        browser.close()
    assert refused == [] and errors == []


def test_exclude_radius_bbox_and_csv(naip_index):
    index = Index.open(naip_index)
    lon, lat = centre_of(index, "m_4709963_se_14_1_20200831:3:9")
    far = query_point(index, lon, lat, k=10, filters=Filters(exclude_radius=1000))
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    for geometry in far.hits.geometry:
        assert geod.inv(lon, lat, geometry.centroid.x, geometry.centroid.y)[2] > 1000
    west, south, east, north = index.catalog.total_bounds
    box = (west, south, (west + east) / 2, (south + north) / 2)
    boxed = query_point(index, lon, lat, k=5, filters=Filters(bbox=box))
    assert all(g.intersects(shapely.box(*box)) for g in boxed.hits.geometry)
    result = CliRunner().invoke(cli, ["query", str(naip_index), "--xy", "488000", "5207000", "--crs", "EPSG:26914",
                                      "--format", "csv", "-k", "3"])  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("rank,score,patch_id") and len(lines) == 4


def test_query_by_image_chip_finds_its_source(naip_index, tmp_path):
    """A PNG cut from an indexed patch's pixels retrieves its place first, the patch itself among that place's dates
    (a chip carries no date, so a two-date index ranks the place, whichever year scores higher)."""
    from rscbir.export import patch_pixels

    index = Index.open(naip_index)
    row = index.catalog.set_index("patch_id").loc["m_4709963_se_14_1_20090818:6:10"].copy()
    row["scene_id"] = "m_4709963_se_14_1_20090818"
    Image.fromarray(patch_pixels(index, row)).save(tmp_path / "chip.png")
    result = query_image(index, tmp_path / "chip.png", k=3)
    assert "m_4709963_se_14_1_20090818:6:10" in result.hits.iloc[0]["matched_patches"]
    assert result.hits.iloc[0]["score"] > 0.95 and result.hits.iloc[1]["score"] < 0.8


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lonlat", "10.0", "50.0"], "outside every indexed patch"),
        (["--lonlat", "-99.15", "47.02", "--date", "20010101"], "no patch of date 2001-01-01 covers"),
        (["--lonlat", "-99.15", "47.02", "--query-date", "20090818", "--date", "20010101"], "no indexed patch has date 2001-01-01"),
        (["--patch-id", "nope:0:0"], "no patch 'nope:0:0'"),
        (["--image", "missing.png"], "no such image file"),
        (["--lonlat", "-99.15", "47.02", "--scene", "elsewhere"], "unknown scene elsewhere"),
    ],
)
def test_bad_queries_exit_2(naip_index, args, message):
    before = sorted(p.name for p in naip_index.iterdir())
    result = CliRunner().invoke(cli, ["query", str(naip_index), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in naip_index.iterdir()) == before


def test_empty_index_is_a_clear_error(tmp_path):
    empty = write_raster(tmp_path / "empty_20200101.tif", np.zeros((3, 64, 64), np.uint8), nodata=0)
    out = tmp_path / "idx"
    result = CliRunner().invoke(cli, ["-q", "index", "build", str(empty), "--patch-size", "32", "--input-size", "32", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert len(Index.open(out)) == 0
    result = CliRunner().invoke(cli, ["query", str(out), "--patch-id", "x:0:0"])
    assert result.exit_code == 2


# ------------------------------------------------- a small index built from rasters written here
@pytest.fixture(scope="module")
def blob_index(tmp_path_factory):
    """Two dates of one 128 x 128 scene (10 m UTM), 32 px patches: a bright blob in patch (1, 1) in 2020,
    in patch (2, 2) in 2021; every other patch is background."""
    folder = tmp_path_factory.mktemp("blobs")
    a = write_raster(folder / "site_20200101.tif", blob_image(128, 128, (48, 48), 5, seed=1), nodata=0)
    b = write_raster(folder / "site_20210101.tif", blob_image(128, 128, (80, 80), 5, seed=2), nodata=0)
    out = folder / "idx"
    result = CliRunner().invoke(cli, ["-q", "index", "build", str(a), str(b), "--align", "--patch-size", "32", "--input-size", "32",
                                      "--runtime", "torch", "--augment", "0", "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    return Index.open(out)


def test_patch_at_picks_the_covering_patch_and_date(blob_index):
    row = blob_index.catalog.set_index("patch_id").index.get_loc("site_20200101:1:1")
    lon, lat = blob_index.catalog.geometry.iloc[row].centroid.coords[0]
    assert blob_index.catalog.iloc[patch_at(blob_index, lon, lat, "20200101")]["patch_id"] == "site_20200101:1:1"
    assert blob_index.catalog.iloc[patch_at(blob_index, lon, lat)]["patch_id"] == "site_20210101:1:1"  # latest date
    with pytest.raises(QueryError, match="outside every indexed patch"):
        patch_at(blob_index, 0.0, 0.0)
    with pytest.raises(QueryError, match="no patch of date 2019-01-01 covers"):
        patch_at(blob_index, lon, lat, "2019-01-01")


def test_blob_finds_the_other_blob_and_filters_keep_k_hits(blob_index):
    result = query_patch(blob_index, "site_20200101:1:1", k=3, filters=Filters(dates=("2021-01-01",)), expansion=QueryExpansion(0))
    assert result.hits.iloc[0]["patch_id"] == "site_20210101:2:2"  # the other blob, not the same ground
    assert set(result.hits["date"]) == {"2021-01-01"} and len(result.hits) == 3
    blobs = [blob_index.catalog.index[blob_index.catalog["patch_id"] == p][0] for p in ("site_20200101:1:1", "site_20210101:2:2")]
    scores, ids = blob_index.search(np.asarray(blob_index.vectors[blobs], dtype=np.float32), 4)
    assert scores.shape == ids.shape == (2, 4)  # FAISS-style (distances, ids), row-aligned with the queries
    assert list(ids[:, 0]) == blobs and (np.diff(scores, axis=1) <= 1e-6).all()
    allowed = np.zeros(len(blob_index), bool)
    allowed[[5, 9, 30]] = True
    _, ids = blob_index.search(np.asarray(blob_index.vectors[:1], dtype=np.float32), 5, allowed)
    assert sorted(ids[0]) == [5, 9, 30]  # fewer allowed ids than k: every allowed one, nothing else
    west, south, east, north = blob_index.catalog.total_bounds
    box = (west, south, (west + east) / 2, (south + north) / 2)
    boxed = query_patch(blob_index, "site_20200101:0:0", k=4, filters=Filters(bbox=box, exclude_radius=1))
    assert len(boxed.hits) == 4 and all(g.intersects(shapely.box(*box)) for g in boxed.hits.geometry)
    assert "site_20200101:0:0" not in set(boxed.hits["patch_id"])
    with pytest.raises(QueryError, match="no indexed patch has date 2019-01-01"):
        query_patch(blob_index, "site_20200101:0:0", filters=Filters(dates=("2019-01-01",)))


def test_image_queries_and_contact_sheets_reuse_what_they_opened(blob_index, tmp_path, monkeypatch):
    """The model is built once per index config (not per --image query), and a contact sheet opens each
    scene once, not once per hit."""
    from rscbir import export
    from rscbir.models.load import model_from_config
    from rscbir.scene import Scene

    assert model_from_config(blob_index.model_config) is model_from_config(blob_index.model_config)
    opened = []
    real_from_dict = Scene.from_dict
    monkeypatch.setattr(Scene, "from_dict", classmethod(lambda cls, doc: opened.append(doc["scene_id"]) or real_from_dict(doc)))
    result = query_patch(blob_index, "site_20200101:1:1", k=12)
    export.contact_sheet(blob_index, result, tmp_path / "sheet.png")
    assert sorted(opened) == sorted(set(result.hits["scene_id"]) | {"site_20200101"})


def test_feedback_ranks_a_positives_neighbours_above_a_negatives(blob_index, tmp_path):
    """Querying a background patch: marking the 2021 blob right and a background patch wrong brings the
    other blob (the positive's neighbour) to the top, where plain ranking leaves it near the bottom."""
    from rscbir.query import Feedback

    plain = list(query_patch(blob_index, "site_20200101:0:0", k=31, places=False).hits["patch_id"])
    assert "site_20200101:1:1" not in plain[:10]  # near the bottom, or below the 31 listed
    marks = Feedback(positives=("site_20210101:2:2",), negatives=("site_20200101:3:3",))
    refined = query_patch(blob_index, "site_20200101:0:0", k=31, feedback=marks, places=False)
    ranked = list(refined.hits["patch_id"])
    assert ranked[0] == "site_20200101:1:1"  # the positive's neighbour is the first new answer
    assert "site_20210101:2:2" not in ranked  # marked right: listed as a mark, not counted again as an answer
    assert dict(zip(refined.marks["patch_id"], refined.marks["label"])) == {"site_20210101:2:2": 1, "site_20200101:3:3": 0}
    assert "site_20200101:3:3" not in ranked  # marked wrong: not shown again
    assert refined.query["feedback"] == {"positives": ["site_20210101:2:2"], "negatives": ["site_20200101:3:3"]}
    # a second round accumulates; a later mark of the same patch wins
    again = marks.add(positives=["site_20200101:3:3"], negatives=["site_20210101:0:0"])
    assert again.positives == ("site_20210101:2:2", "site_20200101:3:3") and again.negatives == ("site_20210101:0:0",)


def test_feedback_from_the_command_line_and_files(blob_index, tmp_path):
    first = tmp_path / "round1.geojson"
    result = CliRunner().invoke(cli, ["query", str(blob_index.path), "--patch-id", "site_20200101:0:0", "-k", "5", "-o", str(first)])
    assert result.exit_code == 0, result.output
    marked = gpd.read_file(first)
    marked["label"] = [1] + [0] * (len(marked) - 1)  # the user keeps the first hit, rejects the rest
    edited = tmp_path / "marked.geojson"
    marked.to_file(edited, driver="GeoJSON")
    second = tmp_path / "round2.geojson"
    result = CliRunner().invoke(cli, ["query", str(blob_index.path), "--patch-id", "site_20200101:0:0", "-k", "5",
                                      "--feedback", str(edited), "--positive", "site_20210101:2:2", "-o", str(second)])  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(second.read_text())
    assert doc["query"]["feedback"]["positives"] == [marked["patch_id"].iloc[0], "site_20210101:2:2"]
    answers = [f["properties"] for f in doc["features"] if f["properties"]["label"] is None]
    assert not set(marked["patch_id"].iloc[1:]) & {p["patch_id"] for p in answers}
    # the marks used ride along, so the file fed back next round keeps them
    assert {f["properties"]["patch_id"]: f["properties"]["label"] for f in doc["features"] if f["properties"]["label"] is not None} == \
        {**{p: 0 for p in marked["patch_id"].iloc[1:]}, marked["patch_id"].iloc[0]: 1, "site_20210101:2:2": 1}
    csv = tmp_path / "marks.csv"
    csv.write_text("patch_id,label\nsite_20210101:2:2,1\n")
    assert CliRunner().invoke(cli, ["query", str(blob_index.path), "--patch-id", "site_20200101:0:0", "--feedback", str(csv)]).exit_code == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--positive", "nowhere:9:9"], "feedback names patches not in"),
        (["--negative", "site_20200101:3:3"], "mark at least one patch right"),
        (["--feedback", "{nolabel}"], "no `label` column"),
    ],
)
def test_bad_feedback_exit_2(blob_index, tmp_path, args, message):
    nolabel = tmp_path / "nolabel.csv"
    nolabel.write_text("patch_id\nsite_20210101:2:2\n")
    args = [a.format(nolabel=nolabel) for a in args]
    result = CliRunner().invoke(cli, ["query", str(blob_index.path), "--patch-id", "site_20200101:0:0", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_feedback_file_with_unlabelled_rows_keeps_marks_over_rounds(blob_index, tmp_path):
    """A user marks only the hits they are sure of; each round's output lists the marks it used, so round 3
    still holds round 1's marks (and a round-1 wrong mark never comes back as an answer)."""
    run = lambda *args: CliRunner().invoke(cli, ["query", str(blob_index.path), "--patch-id", "site_20200101:0:0", "-k", "5", *args])
    first = tmp_path / "r1.geojson"
    assert run("-o", str(first)).exit_code == 0
    doc = json.loads(first.read_text())
    right, wrong = doc["features"][1]["properties"]["patch_id"], doc["features"][2]["properties"]["patch_id"]
    doc["features"][1]["properties"]["label"], doc["features"][2]["properties"]["label"] = 1, 0  # the rest left empty
    first.write_text(json.dumps(doc))
    second = tmp_path / "r2.geojson"
    result = run("--feedback", str(first), "-o", str(second))
    assert result.exit_code == 0, result.output
    doc = json.loads(second.read_text())
    answers = [f["properties"] for f in doc["features"] if f["properties"]["label"] is None]
    assert len(answers) == 5 and not {right, wrong} & {a["patch_id"] for a in answers}  # marked: no slot taken
    new = answers[0]["patch_id"]
    for feature in doc["features"]:
        if feature["properties"]["patch_id"] == new:
            feature["properties"]["label"] = 1
    second.write_text(json.dumps(doc))
    third = tmp_path / "r3.geojson"
    assert run("--feedback", str(second), "-o", str(third)).exit_code == 0
    doc = json.loads(third.read_text())
    marks = {f["properties"]["patch_id"]: f["properties"]["label"] for f in doc["features"] if f["properties"]["label"] is not None}
    assert marks == {right: 1, wrong: 0, new: 1}
    assert set(doc["query"]["feedback"]["positives"]) == {right, new} and doc["query"]["feedback"]["negatives"] == [wrong]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--patch-id", "site_20200101:0:0", "--positive", "site_20210101:2:2", "--negative", "site_20210101:2:2"], "both right and wrong"),
        (["--lonlat", "nan", "nan"], "finite"),
        (["--xy", "nan", "5", "--crs", "EPSG:26914"], "finite"),
        (["--patch-id", "site_20200101:0:0", "--bbox", "nan", "0", "1", "1"], "finite"),
        (["--patch-id", "site_20200101:0:0", "--bbox", "10", "0", "1", "1"], "west must be < east"),
        (["--lonlat", "200", "10"], "not a point on Earth"),
        (["--patch-id", "site_20200101:0:0", "--date", "20210101", "--scene", "site_20200101"], "match both"),
        (["--patch-id", "site_20200101:0:0", "--date", "2021-13-01"], "cannot read date"),
    ],
)
def test_impossible_query_options_exit_2(blob_index, args, message):
    result = CliRunner().invoke(cli, ["query", str(blob_index.path), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_one_hit_per_place_lists_the_other_dates(blob_index):
    """Two dates of one aligned scene: by default each place comes once, with the dates it matched on."""
    result = query_patch(blob_index, "site_20200101:0:0", k=8, expansion=QueryExpansion(0))
    places = list(zip(result.hits["row"], result.hits["col"]))
    assert len(places) == len(set(places)) == 8
    assert any(len(d) == 2 for d in result.hits["dates"])
    every = query_patch(blob_index, "site_20200101:0:0", k=8, expansion=QueryExpansion(0), places=False)
    assert len(set(zip(every.hits["row"], every.hits["col"]))) < 8  # the old answer: the same place twice


@pytest.mark.realdata
@pytest.mark.slow
def test_lake_shore_query_on_ten_dates_returns_ten_places(naip10_index, tmp_path):
    out = tmp_path / "hits.geojson"
    result = CliRunner().invoke(cli, ["query", str(naip10_index), "--lonlat", "-99.14969", "47.02472", "-k", "10",
                                      "--exclude-radius", "500", "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    hits = [f["properties"] for f in json.loads(out.read_text())["features"]]
    assert len(hits) == 10 and len({(h["row"], h["col"]) for h in hits}) == 10
    assert all(h["date"] == h["dates"][0] for h in hits) and sum(len(h["dates"]) for h in hits) > 10


def test_share_of_answers_from_other_dates(naip10_index, tmp_path):
    """`rscbir eval across-dates`: the share of a query's top 10 from other dates, overall and per query date; every
    probe is counted, and distinct places (the default) can only raise the share against --every-date listings."""
    result = CliRunner().invoke(cli, ["eval", "across-dates", str(naip10_index), "--probes", "40", "--json", str(tmp_path / "d.json")])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "d.json").read_text())
    assert doc["probes"] == 40 and len(doc["dates"]) == 10 and 0.0 <= doc["other_dates_share"] <= 1.0
    shares = [v for v in doc["by_query_date"].values() if v is not None]
    assert min(shares) <= doc["other_dates_share"] <= max(shares)


@pytest.mark.realdata
@pytest.mark.slow
def test_a_two_date_index_finds_the_other_date_by_default(naip_index, tmp_path):
    """Ground, not acquisition: NAIP 2009 and 2020 indexed with the defaults (grid pooling, dates centred, within-place
    whitening) answer a query with patches of the other year; the earlier default (plain averages, nothing centred)
    hardly ever did (0.070 of the top 10)."""
    from conftest import DATA, NAIP
    from rscbir.evaluate import evaluate_other_dates
    from rscbir.index.describe import describe_index

    assert describe_index(naip_index)["vectors"]["place_whitening"] and Index.open(naip_index).places is not None
    now = evaluate_other_dates(Index.open(naip_index), probes=60)["other_dates_share"]
    before = tmp_path / "before"
    built = CliRunner().invoke(cli, ["-q", "index", "build", str(DATA / NAIP.format("20090818")), str(DATA / NAIP.format("20200831")),
                                     "--align", "--preset", "naip", "--patch-size", "320m", "--pooling", "avg", "--no-centre-scenes",
                                     "-o", str(before)])  # fmt: skip
    assert built.exit_code == 0, built.output
    assert Index.open(before).places is None
    earlier = evaluate_other_dates(Index.open(before), probes=60)["other_dates_share"]
    assert now >= 0.3 and now > earlier + 0.15, (now, earlier)


def test_identical_dates_share_every_answer(tmp_path):
    """Two dates of the same pixels: each place's two vectors are equal, so an --every-date top 10 holds each of five
    places on both dates (share 0.5 exactly), and the default, one hit per place, names one of the two."""
    from conftest import blob_image, write_raster

    pixels = blob_image(128, 128, centre=(60, 50), sigma=12, seed=4)
    paths = [write_raster(tmp_path / f"same_{d}.tif", pixels) for d in ("20200101", "20210101")]
    out = tmp_path / "twins"
    built = CliRunner().invoke(cli, ["-q", "index", "build", *map(str, paths), "--align", "--patch-size", "16", "--input-size", "32",
                                     "--augment", "0", "-o", str(out)])  # fmt: skip
    assert built.exit_code == 0, built.output
    every = CliRunner().invoke(cli, ["eval", "across-dates", str(out), "--probes", "20", "--every-date", "--json", str(tmp_path / "e.json")])
    assert every.exit_code == 0, every.output
    assert json.loads((tmp_path / "e.json").read_text())["other_dates_share"] == pytest.approx(0.5)

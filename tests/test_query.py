"""Queries on a small real index (NAIP 2009 and 2020, 320 m patches) and their outputs."""

import json

import geopandas as gpd
import numpy as np
import pytest
import shapely
from click.testing import CliRunner
from PIL import Image

from rscbir.cli import cli
from rscbir.index import Index

NAIP = "naip_timeseries/m_4709963_se_14_1_{}.tif"


@pytest.fixture(scope="module")
def naip_index(tmp_path_factory):
    from conftest import DATA

    if not DATA.is_dir():
        pytest.skip(f"real data folder {DATA} is absent")
    out = tmp_path_factory.mktemp("q") / "naip_index"
    result = CliRunner().invoke(cli, ["-q", "index", str(DATA / NAIP.format("20090818")), str(DATA / NAIP.format("20200831")),
                                      "--align", "--preset", "naip", "--patch-size", "320m", "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def centre_of(index, patch_id):
    geometry = index.catalog.set_index("patch_id").loc[patch_id, "geometry"]
    return geometry.centroid.x, geometry.centroid.y


def test_point_query_returns_its_own_patch_first(naip_index):
    index = Index.open(naip_index)
    assert len(index) == 308 and index.manifest["grid"] is not None
    lon, lat = centre_of(index, "m_4709963_se_14_1_20090818:5:7")
    result = index.query_point(lon, lat, k=5, query_date="2009-08-18")
    assert result.hits.iloc[0]["patch_id"] == "m_4709963_se_14_1_20090818:5:7"
    assert result.hits.iloc[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert list(result.hits["rank"]) == [1, 2, 3, 4, 5]
    assert (np.diff(result.hits["score"]) <= 1e-6).all()


def test_same_place_other_year_ranks_far_above_chance(naip_index):
    """Querying each 2009 patch among the 2020 patches: the same ground ranks well above chance.

    Measured when written: median rank 20 of 154 (chance 77), 41 % in the top 10. Crops
    change between years, so this is a tendency, not a rule for every patch.
    """
    index = Index.open(naip_index)
    ranks = []
    for patch_id in index.catalog.loc[index.catalog["date"] == "2009-08-18", "patch_id"]:
        row, col = patch_id.split(":")[1:]
        result = index.query_patch(patch_id, k=154, dates=("2020-08-31",))
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
    with Image.open(tmp_path / "sheet.png") as sheet:
        assert sheet.size[0] > 6 * 128
    assert "leaflet" in (tmp_path / "map.html").read_text().lower()


def test_exclude_radius_bbox_and_csv(naip_index):
    index = Index.open(naip_index)
    lon, lat = centre_of(index, "m_4709963_se_14_1_20200831:3:9")
    far = index.query_point(lon, lat, k=10, exclude_radius=1000)
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    for geometry in far.hits.geometry:
        assert geod.inv(lon, lat, geometry.centroid.x, geometry.centroid.y)[2] > 1000
    west, south, east, north = index.catalog.total_bounds
    box = (west, south, (west + east) / 2, (south + north) / 2)
    boxed = index.query_point(lon, lat, k=5, bbox=box)
    assert all(g.intersects(shapely.box(*box)) for g in boxed.hits.geometry)
    result = CliRunner().invoke(cli, ["query", str(naip_index), "--xy", "488000", "5207000", "--crs", "EPSG:26914",
                                      "--format", "csv", "-k", "3"])  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("rank,score,patch_id") and len(lines) == 4


def test_query_by_image_chip_finds_its_source(naip_index, tmp_path):
    """A PNG cut from an indexed patch's pixels retrieves that patch first."""
    from rscbir.export import patch_pixels

    index = Index.open(naip_index)
    row = index.catalog.set_index("patch_id").loc["m_4709963_se_14_1_20090818:6:10"].copy()
    row["scene_id"] = "m_4709963_se_14_1_20090818"
    Image.fromarray(patch_pixels(index, row)).save(tmp_path / "chip.png")
    result = index.query_image(tmp_path / "chip.png", k=3)
    assert result.hits.iloc[0]["patch_id"] == "m_4709963_se_14_1_20090818:6:10"
    assert result.hits.iloc[0]["score"] > 0.97


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
    from conftest import write_raster

    empty = write_raster(tmp_path / "empty_20200101.tif", np.zeros((3, 64, 64), np.uint8), nodata=0)
    out = tmp_path / "idx"
    result = CliRunner().invoke(cli, ["-q", "index", str(empty), "--patch-size", "32", "--input-size", "32", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert len(Index.open(out)) == 0
    result = CliRunner().invoke(cli, ["query", str(out), "--patch-id", "x:0:0"])
    assert result.exit_code == 2

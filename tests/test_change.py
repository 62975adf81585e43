"""Change scores, thresholds, polygons, rasters; on rasters written here and on real data."""

import json
import subprocess
import sys
import textwrap

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from PIL import Image
from click.testing import CliRunner

from conftest import blob_image, write_raster
from rscbir.change import robust_z, score_change
from rscbir.errors import ThresholdError
from rscbir.cli import cli
from rscbir.evaluate import roc_auc
from rscbir.scene import Scene
from rscbir.thresholds import Threshold, ThresholdRule, otsu
from rscbir.tiling import TilingConfig


def threshold_value(values, rule):
    return Threshold.parse(rule).value(values)


@pytest.fixture
def pair(tmp_path):
    """Before: smooth fields; after: the same with a bright new 'building' in rows 32-63, cols 64-95."""
    before = blob_image(128, 128, centre=(90, 30), sigma=10, seed=1)
    after = before.copy()
    after[:, 36:60, 68:92] = [[[240]], [[230]], [[220]]]
    return (write_raster(tmp_path / "before_20190101.tif", before, nodata=0),
            write_raster(tmp_path / "after_20200101.tif", after, nodata=0))  # fmt: skip


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_otsu_and_threshold_rules():
    values = np.concatenate([np.random.default_rng(0).normal(0, 1, 900), np.random.default_rng(1).normal(10, 1, 100)])
    assert 3 < otsu(values) < 7
    assert threshold_value(values, "percentile:90") == pytest.approx(np.percentile(values, 90))
    assert threshold_value(values, "sigma:2") == pytest.approx(values.mean() + 2 * values.std())
    assert threshold_value(values, 4.5) == 4.5
    assert otsu(np.ones(10)) == 1.0  # constant scores: nothing above the cut
    with pytest.raises(ThresholdError, match="unknown threshold 'magic'"):
        Threshold.parse("magic")
    with pytest.raises(ThresholdError, match="unknown threshold"):
        Threshold.parse("percentile:150")
    rule = Threshold.parse("percentile")  # parsed once, applied to any scores
    assert rule == Threshold(ThresholdRule.PERCENTILE, 95.0) and str(rule) == "percentile:95"
    assert Threshold.parse(str(rule)) == rule and Threshold.parse(Threshold.parse(0.3)).arg == 0.3
    # robust: median + k * 1.4826 MAD, an outlier rule the rare changes do not move
    heavy = np.concatenate([np.random.default_rng(2).normal(0, 1, 9700), np.full(300, 40.0)])
    assert threshold_value(heavy, "robust:3") == pytest.approx(3 * 1.4826 * np.median(np.abs(heavy - np.median(heavy))) + np.median(heavy))
    assert 2.5 < threshold_value(heavy, "robust") < 3.5 and threshold_value(np.ones(50), "robust:3") == 1.0
    # median 2.5, MAD 1 (deviations 1.5, .5, .5, 97.5): the outlier does not widen the scale
    np.testing.assert_allclose(robust_z([1, 2, 3, 100])[:3], np.array([-1.5, -0.5, 0.5]) / 1.4826, atol=1e-6)


def test_roc_auc():
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert roc_auc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    assert np.isnan(roc_auc(np.array([1.0, 2.0]), np.array([0, 0])))


def test_new_building_is_flagged_where_it_is(pair, tmp_path):
    out = tmp_path / "change.geojson"
    result = run("change", *pair, "--preset", "rgb", "--patch-size", "32", "--input-size", "64", "--level", "patch", "-o", out,
                 "--scores", tmp_path / "scores.tif", "--preview", tmp_path / "change.png")  # fmt: skip
    assert result.exit_code == 0, result.output
    areas = gpd.read_file(out)
    assert areas.crs.to_epsg() == 4326 and len(areas) >= 1
    with rasterio.open(pair[0]) as ds:
        building = shapely.box(*rasterio.windows.bounds(rasterio.windows.Window(68, 36, 24, 24), ds.transform))
    building = gpd.GeoSeries([building], crs="EPSG:32618").to_crs(4326).iloc[0]
    assert areas.geometry.iloc[0].intersects(building)
    assert {"max_score", "mean_score", "area_m2", "patches", "date_before", "date_after"} <= set(areas.columns)
    assert str(areas["date_before"].iloc[0])[:10] == "2019-01-01" and areas["area_m2"].iloc[0] == pytest.approx(320 * 320, rel=0.02)
    with rasterio.open(tmp_path / "scores.tif") as scores:
        assert scores.crs.to_epsg() == 32618 and scores.dtypes[0] == "float32" and scores.shape == (4, 4)
        grid = scores.read(1)
        assert np.unravel_index(np.nanargmax(grid), grid.shape) == (1, 2)  # the building's patch
    with Image.open(tmp_path / "change.png") as png:  # before | after | heat map, side by side
        assert png.size == (3 * 128 + 20, 128 + 20)
        heat = np.asarray(png.convert("RGB"))[15:143, 2 * 133 + 5 : 2 * 133 + 5 + 128].astype(int)
    assert heat.std() > 10  # not blank: the building's patch is hotter than the fields
    assert heat[36:60, 68:92, 0].mean() > heat[100:120, 10:30, 0].mean() + 50


def test_score_raster_is_a_cloud_optimized_geotiff(tmp_path):
    """--scores writes a COG: GDAL reads its layout as COG, tiled 256 px, deflate, with averaged overviews,
    the same georeferencing, nodata NaN, and the method and dates as tags."""
    before = blob_image(640, 640, centre=(300, 200), sigma=30, seed=3)
    after = before.copy()
    after[:, 400:470, 100:180] = [[[240]], [[230]], [[220]]]
    a = write_raster(tmp_path / "big_before_20190101.tif", before, nodata=0)
    b = write_raster(tmp_path / "big_after_20200101.tif", after, nodata=0)
    result = run("change", a, b, "--preset", "rgb", "--patch-size", "64", "--input-size", "64", "--method", "cva",
                 "-o", tmp_path / "c.geojson", "--scores", tmp_path / "scores.tif")  # fmt: skip
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "scores.tif") as cog, rasterio.open(a) as source:
        assert cog.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG" and cog.profile["compress"].lower() == "deflate"
        assert cog.block_shapes == [(256, 256)] and cog.overviews(1) == [2, 4]  # halved until one tile covers it
        assert cog.crs == source.crs and cog.transform == source.transform and cog.shape == (640, 640)
        assert np.isnan(cog.nodata) and cog.tags()["method"] == "cva" and cog.tags()["date_before"] == "2019-01-01"
        scores = cog.read(1)
        assert np.nanargmax(scores.mean(axis=1)) in range(400, 470)  # the new building is the hottest place
        overview = cog.read(1, out_shape=(320, 320))
        assert np.isfinite(overview).mean() > 0.9


def test_identical_dates_give_no_change(pair, tmp_path):
    out = tmp_path / "none.geojson"
    result = run("change", pair[0], pair[0], "--preset", "rgb", "--patch-size", "32", "--input-size", "64", "-o", out)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["features"] == []


def test_all_patches_and_cva_only(pair, tmp_path):
    out = tmp_path / "all.geojson"
    result = run("change", *pair, "--method", "cva", "--patch-size", "32", "--all-patches", "-o", out)
    assert result.exit_code == 0, result.output
    patches = gpd.read_file(out)
    assert len(patches) == 16 and patches.loc[patches["score"].idxmax(), "patch_id"].endswith(":1:2")


@pytest.mark.parametrize("case", ["no overlap", "band count"])
def test_change_errors(tmp_path, pair, case):
    if case == "no overlap":
        far = write_raster(tmp_path / "far.tif", blob_image(64, 64, (10, 10)), transform=Affine(10, 0, 900000, 0, -10, 100000))
        args, message = [pair[0], far], "does not overlap"
    else:
        four = write_raster(tmp_path / "four.tif", np.ones((4, 128, 128), np.uint8))
        args, message = [pair[0], four], "pass --preset or --bands"
    result = run("change", *args, "--patch-size", "32", "-o", tmp_path / "x.geojson")
    assert result.exit_code == 2, result.output
    assert message in result.output and not (tmp_path / "x.geojson").exists()


# ----------------------------------------------------------------- real data
NAIP = "naip_timeseries/m_4709963_se_14_1_{}.tif"


def test_oscd_flagged_patches_hold_more_change_than_base_rate(real_data):
    from rscbir.datasets.oscd import oscd_change_fraction
    from rscbir.tiling import aligned_grid

    city = real_data / "oscd" / "rennes"
    before_all, after_all = Scene.open(city / "imgs_1"), Scene.open(city / "imgs_2")
    grid = aligned_grid([before_all, after_all])
    scores = score_change(before_all, after_all.select(before_all.band_names), None, TilingConfig(32), grid)
    fraction = oscd_change_fraction(city, scores.patches, grid)
    values = scores.score("cva")
    flagged = values > threshold_value(values, "percentile:90")
    assert fraction[flagged].mean() > 2 * fraction.mean()


def test_naip_one_row_shift_gives_few_false_alarms_when_aligned(real_data, tmp_path):
    """2009 against itself moved one row down on the ground: aligned, almost nothing changes."""
    with rasterio.open(real_data / NAIP.format("20090818")) as ds:
        data, profile = ds.read(), ds.profile
    shifted = tmp_path / "shifted_20100101.tif"
    profile.update(transform=ds.transform * Affine.translation(0, 1), height=data.shape[1] - 1)
    with rasterio.open(shifted, "w", **profile) as dst:
        dst.write(data[:, 1:])
    # the same pixels labelled with 2009's transform: compared array index by index, one row off on the ground
    unaligned = tmp_path / "unaligned_20100101.tif"
    profile.update(transform=ds.transform)
    with rasterio.open(unaligned, "w", **profile) as dst:
        dst.write(data[:, 1:])
    before = Scene.open(real_data / NAIP.format("20090818"))
    aligned = score_change(before, Scene.open(shifted), None, TilingConfig(64)).score("cva")
    misaligned = score_change(before, Scene.open(unaligned), None, TilingConfig(64)).score("cva")
    assert np.median(aligned) < 0.01 and np.median(misaligned) > 0.2
    cut = threshold_value(misaligned, "otsu")
    assert np.mean(aligned > cut) == 0.0


def test_change_from_index_and_query_change(real_data, tmp_path):
    out = tmp_path / "idx"
    result = run("-q", "index", "build", real_data / NAIP.format("20090818"), real_data / NAIP.format("20200831"), "--align",
                 "--preset", "naip", "--patch-size", "320m", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    result = run("change", "--index", out, "--dates", "20090818", "20200831", "--method", "cosine", "-o", tmp_path / "c.geojson")
    assert result.exit_code == 0, result.output
    assert gpd.read_file(tmp_path / "c.geojson").crs.to_epsg() == 4326
    result = run("query-change", out, "--lonlat", "-99.1329", "47.0294", "--dates", "20090818", "20200831", "-k", "5")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["query"]["type"] == "change" and 0 < len(doc["features"]) <= 5
    scores = [f["properties"]["score"] for f in doc["features"]]
    assert scores == sorted(scores, reverse=True)
    missing = run("change", "--index", out, "--dates", "20090818", "20150926", "-o", tmp_path / "m.geojson")
    assert missing.exit_code == 2 and "no scene of date 2015-09-26" in missing.output
    same = run("change", "--index", out, "--dates", "20090818", "2009-08-18", "-o", tmp_path / "s.geojson")
    assert same.exit_code == 2 and "give two different dates" in same.output and not (tmp_path / "s.geojson").exists()
    assert {f["properties"]["date"] for f in doc["features"]} == {"2009-08-18/2020-08-31"}  # ISO, as everywhere


def test_dense_pixel_scores_raster_has_grid_pixels(pair, tmp_path):
    result = run("change", *pair, "--preset", "rgb", "--patch-size", "32", "--input-size", "64",
                 "--scores", tmp_path / "pixels.tif", "-o", tmp_path / "c.geojson")  # fmt: skip
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "pixels.tif") as scores, rasterio.open(pair[0]) as source:
        assert scores.shape == source.shape and scores.transform == source.transform
        grid = scores.read(1)
    row, col = np.unravel_index(np.nanargmax(grid), grid.shape)
    assert 30 <= row < 66 and 62 <= col < 98  # the strongest pixel lies on or next to the new building


def test_pixel_level_flags_new_buildings_not_a_global_brightness_shift(tmp_path):
    """Date 2 is date 1 made 25 % brighter everywhere (new light, new season) with a block of bright new
    'buildings' painted in: the pixel map outlines the block, not the scene."""
    before = 0.5 * blob_image(192, 192, centre=(150, 40), sigma=14, seed=4).astype(np.float32)
    texture = np.random.default_rng(5).normal(0, 6, before.shape[1:])
    before = np.clip(before + texture, 1, 255)
    noise = np.random.default_rng(6).normal(0, 3, before.shape)  # two acquisitions never share their sensor noise
    after = np.clip(before * 1.2 + 20 + noise, 1, 255)  # brighter everywhere, nothing saturates
    after[:, 60:84, 110:140] = [[[250]], [[245]], [[235]]]
    a = write_raster(tmp_path / "before_20190101.tif", before.astype(np.uint8), nodata=0)
    b = write_raster(tmp_path / "after_20200101.tif", after.astype(np.uint8), nodata=0)
    out = tmp_path / "pixels.geojson"
    result = run("change", a, b, "--preset", "rgb", "--patch-size", "32", "--input-size", "64", "-o", out, "--preview", tmp_path / "p.png")
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["change"]["level"] == "pixel" and doc["change"]["threshold_rule"] == "robust:3"
    areas = gpd.read_file(out)
    assert areas.crs.to_epsg() == 4326 and len(areas) >= 1 and areas.geometry.is_valid.all()
    with rasterio.open(a) as ds:
        block = shapely.box(*rasterio.windows.bounds(rasterio.windows.Window(110, 60, 30, 24), ds.transform))
    block = gpd.GeoSeries([block], crs="EPSG:32618").to_crs(4326).iloc[0]
    assert areas.geometry.iloc[0].intersects(block)  # the strongest area is the new block
    flagged = areas.geometry.union_all()
    assert flagged.intersection(block).area / block.area > 0.5  # most of the block is outlined
    assert doc["change"]["changed_pixels"] < 0.2 * doc["change"]["pixels"]  # the brightness shift is not a change
    blob = gpd.GeoSeries([shapely.box(*rasterio.windows.bounds(rasterio.windows.Window(20, 130, 40, 40), ds.transform))],
                         crs="EPSG:32618").to_crs(4326).iloc[0]  # fmt: skip
    assert not flagged.intersects(blob)  # the bright field that only got brighter is not flagged
    assert (areas["pixels"] >= 10).all() and {"max_score", "mean_score", "area_m2", "date_before", "date_after"} <= set(areas.columns)


def test_eval_change_reads_image_pair_folders(tmp_path):
    """The A/ B/ label/ layout of LEVIR-CD and DSIFN: plain PNG pairs are evaluated at pixel level."""
    for side in ("A", "B", "label"):
        (tmp_path / "pairs" / side).mkdir(parents=True)
    for i in range(2):
        before = np.clip(np.moveaxis(blob_image(128, 128, (100, 30), 10, seed=i), 0, -1) * 0.5
                         + np.random.default_rng(i).normal(0, 5, (128, 128, 3)), 1, 255).astype(np.uint8)  # fmt: skip
        after = np.clip(before + np.random.default_rng(10 + i).normal(0, 3, before.shape), 1, 255).astype(np.uint8)
        after[30:60, 60:100] = (240, 235, 230)
        label = np.zeros((128, 128), np.uint8)
        label[30:60, 60:100] = 255
        Image.fromarray(before).save(tmp_path / "pairs" / "A" / f"{i}.png")
        Image.fromarray(after).save(tmp_path / "pairs" / "B" / f"{i}.png")
        Image.fromarray(label).save(tmp_path / "pairs" / "label" / f"{i}.png")
    result = run("eval", "change", tmp_path / "pairs", "--json", tmp_path / "pairs.json", "-q")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "pairs.json").read_text())
    assert set(report["images"]) == {"0.png", "1.png"}
    assert report["pooled"]["fusion"]["f1"] > 0.5 and report["pooled"]["fusion"]["auc"] > 0.9
    (tmp_path / "pairs" / "label" / "1.png").unlink()
    broken = run("eval", "change", tmp_path / "pairs")
    assert broken.exit_code == 2 and "same file names in A/, B/ and label/" in broken.output


def test_eval_change_labels_of_wrong_size_or_without_change(tmp_path):
    """A label that does not cover its image is a clear error; a label with no change gives NaN with a reason."""
    for side in ("A", "B", "label"):
        (tmp_path / side).mkdir()
    image = np.clip(np.random.default_rng(0).normal(120, 20, (96, 96, 3)), 1, 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "A" / "0.png")
    Image.fromarray(image).save(tmp_path / "B" / "0.png")
    Image.fromarray(np.zeros((64, 96), np.uint8)).save(tmp_path / "label" / "0.png")
    wrong = run("eval", "change", tmp_path, "-q")
    assert wrong.exit_code == 2 and "label is 96 x 64 px, the images are 96 x 96" in wrong.output
    assert "Traceback" not in wrong.output
    Image.fromarray(np.zeros((96, 96), np.uint8)).save(tmp_path / "label" / "0.png")
    empty = run("eval", "change", tmp_path, "-q", "--json", tmp_path / "r.json")
    assert empty.exit_code == 0, empty.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert "no change pixels" in report["notes"]["0.png"]
    assert report["pooled"]["fusion"]["auc"] is None or np.isnan(report["pooled"]["fusion"]["auc"])


# ------------------------------------------------------- what a first user tripped over (issue 24)
def test_pixel_map_covers_the_image_edges(tmp_path):
    """A 150 x 140 px pair cut into 32 px patches leaves a strip that no whole patch covers: it is scored too."""
    rng = np.random.default_rng(9)
    before = np.clip(blob_image(140, 150, centre=(60, 60), sigma=12, seed=3) + rng.normal(0, 4, (3, 140, 150)), 1, 255)
    after = np.clip(before + rng.normal(0, 4, before.shape), 1, 255).astype(np.uint8)
    before = before.astype(np.uint8)
    after[:, 120:140, 130:150] = 240  # a change in the bottom-right corner, in the strip `--edge drop` left out
    a = write_raster(tmp_path / "before_20190101.tif", before, nodata=0)
    b = write_raster(tmp_path / "after_20200101.tif", after, nodata=0)
    result = run("change", a, b, "--preset", "rgb", "--patch-size", "32", "--input-size", "64",
                 "--scores", tmp_path / "s.tif", "-o", tmp_path / "c.geojson")  # fmt: skip
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "s.tif") as ds:
        grid = ds.read(1)
        assert grid.shape == (140, 150) and not np.isnan(grid).any()
        corner = gpd.GeoSeries([shapely.box(*rasterio.windows.bounds(rasterio.windows.Window(130, 120, 20, 20), ds.transform))],
                               crs=ds.crs).to_crs(4326).iloc[0]  # fmt: skip
    assert gpd.read_file(tmp_path / "c.geojson").geometry.union_all().intersects(corner)


def test_areas_are_ranked_by_a_score_one_pixel_cannot_dominate(tmp_path):
    """A one-pixel glint far brighter than anything else must not top the list above a real new building."""
    rng = np.random.default_rng(8)
    before = np.clip(blob_image(128, 128, centre=(100, 30), sigma=12, seed=1).astype(float) + rng.normal(0, 4, (3, 128, 128)), 1, 255)
    after = np.clip(before + rng.normal(0, 4, before.shape), 1, 255)
    after[:, 30:54, 70:94] = [[[230]], [[220]], [[210]]]  # the building
    after[:, 100, 100] = [255, 0, 255]  # the glint: one magenta pixel
    a = write_raster(tmp_path / "before_20190101.tif", before.astype(np.uint8), nodata=0)
    b = write_raster(tmp_path / "after_20200101.tif", after.astype(np.uint8), nodata=0)
    out = tmp_path / "c.geojson"
    result = run("change", a, b, "--preset", "rgb", "--patch-size", "32", "--input-size", "64", "--method", "cva", "-o", out)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["change"]["area_score"].startswith("p75")
    areas = gpd.read_file(out)
    with rasterio.open(a) as ds:
        building = shapely.box(*rasterio.windows.bounds(rasterio.windows.Window(70, 30, 24, 24), ds.transform))
    building = gpd.GeoSeries([building], crs="EPSG:32618").to_crs(4326).iloc[0]
    assert areas.geometry.iloc[0].intersects(building)
    assert list(areas["score"]) == sorted(areas["score"], reverse=True)


def test_change_from_python_in_one_call(tmp_path):
    from rscbir.change import detect
    from rscbir.models.options import ModelOptions

    rng = np.random.default_rng(10)
    before = np.clip(blob_image(128, 128, centre=(110, 15), sigma=10, seed=1) + rng.normal(0, 4, (3, 128, 128)), 1, 255)
    after = np.clip(before + rng.normal(0, 4, before.shape), 1, 255)
    after[:, 36:60, 68:92] = [[[240]], [[230]], [[220]]]
    pair = (write_raster(tmp_path / "before_20190101.tif", before.astype(np.uint8), nodata=0),
            write_raster(tmp_path / "after_20200101.tif", after.astype(np.uint8), nodata=0))  # fmt: skip
    found = detect(*pair, preset="rgb", tiling=TilingConfig(32), model_options=ModelOptions(input_size=64))
    assert found.summary["level"] == "pixel" and found.mask.shape == (128, 128)
    assert found.mask[40:56, 72:88].mean() > 0.5 and found.mask[:20, :40].mean() < 0.1  # the building, not the background
    assert found.areas.crs.to_epsg() == 4326 and found.areas["date_before"].iloc[0] == "2019-01-01"


def test_oscd_reversed_dates_warn(real_data, tmp_path):
    oscd = real_data / "oscd" / "rennes"
    result = run("change", oscd / "imgs_2", oscd / "imgs_1", "--preset", "sentinel2", "--method", "cva", "--patch-size", "32",
                 "-o", tmp_path / "c.geojson")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "BEFORE (2017-06-21) is later than AFTER (2015-08-21)" in result.output


def test_index_change_refuses_options_it_would_ignore_and_orders_dates(naip_index, tmp_path):
    base = ["change", "--index", naip_index, "--dates", "20200831", "20090818", "--method", "cosine"]
    for extra, message in ((["--level", "pixel"], "--level cannot be used with --index"),
                           (["--preset", "sentinel2"], "--preset cannot be used with --index"),
                           (["--patch-size", "64"], "--patch-size cannot be used with --index")):  # fmt: skip
        result = run(*base, *extra, "-o", tmp_path / "x.geojson")
        assert result.exit_code == 2 and message in result.output and not (tmp_path / "x.geojson").exists(), result.output
    third = run("change", "--index", naip_index, "--dates", "20090818", "20200831", "20150926", "-o", tmp_path / "x.geojson")
    assert third.exit_code == 2 and "extra value: 20150926" in third.output
    result = run(*base, "-o", tmp_path / "c.geojson")
    assert result.exit_code == 0 and "comparing 2009-08-18 2020-08-31" in result.output
    first = gpd.read_file(tmp_path / "c.geojson")
    assert (first["date_before"] == "2009-08-18").all() and (first["date_after"] == "2020-08-31").all()
    sheet = tmp_path / "qc.png"
    result = run("query-change", naip_index, "--lonlat", "-99.1329", "47.0294", "--dates", "20200831", "20090818", "-k", "4",
                 "--preview", sheet, "-o", tmp_path / "qc.geojson")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "qc.geojson").read_text())["query"]["dates"] == ["2009-08-18", "2020-08-31"]
    with Image.open(sheet) as image:
        assert image.width > 600 and image.height > 100  # 3 columns of before | after pairs


def test_places_sheet_shows_the_strongest_changed_places(naip_index, tmp_path):
    """--places-sheet: the 18 strongest changed places as before | after pairs, 3 to a row, strongest first."""
    result = run("change", "--index", naip_index, "--dates", "20090818", "20200831", "--method", "cosine", "--all-patches",
                 "-o", tmp_path / "all.geojson", "--places-sheet", tmp_path / "places.png")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert int(result.output.strip().splitlines()[-1].split(" of ")[0]) >= 18  # "64 of 154 patches changed ..."
    with Image.open(tmp_path / "places.png") as image:
        assert image.size == (3 * (2 * 112 + 4 + 6) + 6, 6 * (112 + 16 + 6) + 6)  # 18 pairs of 112 px thumbnails
        pixels = np.asarray(image.convert("RGB"))
    first_pair = pixels[6 : 6 + 112, 6 : 6 + 2 * 112 + 4]
    assert first_pair.std() > 5 and not np.array_equal(first_pair[:, :112], first_pair[:, 116:])  # two dates, real imagery
    refused = run("change", "a.tif", "b.tif", "-o", tmp_path / "x.geojson", "--places-sheet", tmp_path / "x.png")
    assert refused.exit_code == 2 and "--places-sheet shows places of an index" in refused.output
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.geojson").exists()


def test_cosine_change_from_an_index_never_loads_torch(naip_index, tmp_path):
    """`rscbir change --index --method cosine` compares the stored vectors: it starts without torch, like a query."""
    code = textwrap.dedent(f"""
        import sys
        from click.testing import CliRunner
        from rscbir.cli import cli
        result = CliRunner().invoke(cli, ["change", "--index", "{naip_index}", "--dates", "20090818", "20200831",
                                          "--method", "cosine", "-o", "{tmp_path / 'c.geojson'}",
                                          "--places-sheet", "{tmp_path / 'places.png'}"])
        assert result.exit_code == 0, result.output
        print("torch" in sys.modules)
    """)
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert child.stdout.strip().splitlines()[-1] == "False"
    assert gpd.read_file(tmp_path / "c.geojson").crs.to_epsg() == 4326


def _dated_sequence(root, dates, changed_at, size=192):
    """The same textured ground on every date, each date brighter than the last; one 32 px block becomes a bright
    checkerboard 'building' from date ``changed_at`` on."""
    from scipy import ndimage

    rng = np.random.default_rng(7)
    ground = np.stack([ndimage.gaussian_filter(rng.random((size, size)), 3) for _ in range(3)])
    ground = 40 + 120 * (ground - ground.min()) / (ground.max() - ground.min())
    paths = []
    for k, date in enumerate(dates):
        image = ground * (1 + 0.08 * k)
        if k >= changed_at:
            checker = (np.indices((32, 32)).sum(axis=0) // 4) % 2
            image[:, 64:96, 96:128] = 60 + 180 * checker
        paths.append(write_raster(root / f"scene_{date}.tif", np.clip(image, 1, 255).astype(np.uint8)))
    return paths


def test_time_series_says_when_a_place_changed(tmp_path):
    dates = ["20180101", "20190101", "20200101", "20210101"]
    paths = _dated_sequence(tmp_path, dates, changed_at=2)
    index = tmp_path / "idx"
    built = CliRunner().invoke(cli, ["-q", "index", "build", *map(str, paths), "--align", "--preset", "rgb", "--patch-size", "32",
                                     "--input-size", "64", "-o", str(index)])  # fmt: skip
    assert built.exit_code == 0, built.output
    out = tmp_path / "when.geojson"
    result = CliRunner().invoke(cli, ["change", "--index", str(index), "-o", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    changed = [f["properties"] for f in doc["features"]]
    assert [(p["row"], p["col"], p["changed_between"], p["changed_steps"]) for p in changed] == [(2, 3, "2019-01-01/2020-01-01", 1)]
    assert doc["change"]["changed_by_interval"] == {"2018-01-01/2019-01-01": 0, "2019-01-01/2020-01-01": 1, "2020-01-01/2021-01-01": 0}
    single = tmp_path / "one"
    assert CliRunner().invoke(cli, ["-q", "index", "build", str(paths[0]), "--align", "--preset", "rgb", "--patch-size", "32",
                                    "--input-size", "64", "-o", str(single)]).exit_code == 0  # fmt: skip
    refused = CliRunner().invoke(cli, ["change", "--index", str(single), "-o", str(tmp_path / "x.geojson")])
    assert refused.exit_code == 2 and "a time series of change needs two or more" in refused.output
    assert not (tmp_path / "x.geojson").exists()

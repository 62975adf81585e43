"""Change the user teaches: marks read from vector files, the correction around them, simulated clicks."""

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner

from conftest import blob_image, write_raster
from rscbir.change.clicks import correcting_clicks, first_clicks
from rscbir.change.marks import MarkRule, MarksError, correct_with_marks, mark_regions, read_marks
from rscbir.cli import cli
from rscbir.grid import Grid
from rscbir.scene import Scene


@pytest.fixture
def pair(tmp_path):
    """After: two new bright 'buildings' and a darkened (shadowed) field on the same fields as before."""
    before = blob_image(128, 128, centre=(90, 30), sigma=10, seed=1)
    after = before.copy()
    after[:, 10:22, 10:22] = [[[240]], [[230]], [[220]]]
    after[:, 10:22, 100:112] = [[[240]], [[230]], [[220]]]
    after[:, 80:120, 60:120] = (after[:, 80:120, 60:120] * 0.4).astype(after.dtype)
    return (write_raster(tmp_path / "before_20190101.tif", before, nodata=0),
            write_raster(tmp_path / "after_20200101.tif", after, nodata=0))  # fmt: skip


def _grid(path):
    with rasterio.open(path) as ds:
        return Grid.from_dataset(ds)


def _marks(path, grid, points, crs=None):
    xs, ys = zip(*[grid.transform * (c + 0.5, r + 0.5) for r, c, _ in points])
    frame = gpd.GeoDataFrame({"changed": [v for *_, v in points]}, geometry=gpd.points_from_xy(xs, ys), crs=grid.crs)
    frame.to_crs(crs or "EPSG:4326").to_file(path, driver="GeoJSON")
    return path


def test_marks_are_read_onto_the_grid_in_any_crs(pair, tmp_path):
    grid = _grid(pair[0])
    path = _marks(tmp_path / "m.geojson", grid, [(15, 15, 1), (100, 90, 0)])
    marks = read_marks(path, grid)
    assert marks.labels[15, 15] == 1 and marks.labels[100, 90] == 0 and (marks.labels >= 0).sum() == 2
    box = shapely.box(*grid.transform * (60, 120), *grid.transform * (120, 80))
    gpd.GeoDataFrame({"changed": ["false"]}, geometry=[box], crs=grid.crs).to_file(tmp_path / "poly.gpkg")
    field = read_marks(tmp_path / "poly.gpkg", grid)
    assert (field.labels[80:120, 60:120] == 0).mean() > 0.95 and field.changed == 0


def test_bad_marks_say_why(pair, tmp_path):
    grid = _grid(pair[0])
    gpd.GeoDataFrame({"other": [1]}, geometry=[shapely.Point(grid.transform * (5, 5))], crs=grid.crs).to_file(tmp_path / "a.geojson")
    with pytest.raises(MarksError, match="no 'changed' property"):
        read_marks(tmp_path / "a.geojson", grid)
    gpd.GeoDataFrame({"changed": [1]}, geometry=[shapely.Point(0, 0)], crs="EPSG:4326").to_file(tmp_path / "b.geojson")
    with pytest.raises(MarksError, match="none of its 1 marks lies on the pair"):
        read_marks(tmp_path / "b.geojson", grid)
    gpd.GeoDataFrame({"changed": [1]}, geometry=[shapely.Point(grid.transform * (5, 5))]).to_file(tmp_path / "c.shp")
    with pytest.raises(MarksError, match="no CRS"):
        read_marks(tmp_path / "c.shp", grid)
    gpd.GeoDataFrame({"changed": ["maybe"]}, geometry=[shapely.Point(grid.transform * (5, 5))], crs=grid.crs).to_file(tmp_path / "d.geojson")
    with pytest.raises(MarksError, match="changed='maybe'"):
        read_marks(tmp_path / "d.geojson", grid)


def test_correction_moves_what_resembles_a_mark_and_nothing_it_agrees_with():
    rng = np.random.default_rng(0)
    space = np.concatenate([rng.normal(0, 0.1, (50, 2)), rng.normal(5, 0.1, (50, 2))])
    logit = np.full(100, 1.0, np.float32)  # everything changed
    fixed = correct_with_marks(logit, space, np.array([60]), np.array([0]), MarkRule(bandwidth=1.0, reach=None))
    assert (fixed[50:] < 0).all() and (fixed[:50] == 1.0).all()  # the marked kind is unchanged now, the other kind kept
    agreed = correct_with_marks(np.full(100, 3.0, np.float32), space, np.array([60]), np.array([1]), MarkRule(reach=None))
    assert (agreed == 3.0).all()  # a mark the map already agrees with asks for nothing
    positions = np.concatenate([np.zeros((50, 2)), np.tile([[0.0, 100.0]], (50, 1))])
    local = correct_with_marks(logit, np.zeros((100, 2)), np.array([0]), np.array([0]), MarkRule(reach=8.0), positions)
    assert (local[:50] < 0).all() and (local[50:] > 0.99).all()  # reach: a mark answers for its surroundings


def test_simulated_clicks_follow_the_label():
    truth = np.zeros((60, 60), bool)
    truth[5:10, 5:10] = truth[30:40, 30:40] = truth[50:55, 5:8] = True
    valid = np.ones_like(truth)
    marks = first_clicks(truth, valid, 3, seed=0)
    assert (marks == 1).sum() == 2 and (marks == 0).sum() == 1
    assert truth[marks == 1].all() and not truth[marks == 0].any()
    predicted = np.zeros_like(truth)
    predicted[0:3, 40:60] = True  # one false area; every changed area missed
    more = correcting_clicks(truth, predicted, valid, 2, marks)
    new = (more >= 0) & (marks < 0)
    assert new.sum() == 2 and more[35, 35] == 1 or truth[new & (more == 1)].all()
    assert (more[0:3, 40:60] == 0).sum() == 1  # the false area got a "not changed" click


def test_change_with_marks_on_the_cli(pair, tmp_path, monkeypatch):
    monkeypatch.setenv("RSCBIR_CACHE", str(tmp_path / "cache"))
    grid = _grid(pair[0])
    out = tmp_path / "plain.geojson"
    common = ["change", *map(str, pair), "--preset", "rgb", "--patch-size", "32", "--input-size", "64"]
    plain = CliRunner().invoke(cli, [*common, "-o", str(out)])
    assert plain.exit_code == 0, plain.output
    marks = _marks(tmp_path / "m.geojson", grid, [(15, 15, 1), (100, 90, 0)])
    taught = tmp_path / "taught.geojson"
    result = CliRunner().invoke(cli, [*common, "--marks", str(marks), "-o", str(taught), "--scores", str(tmp_path / "s.tif")])
    assert result.exit_code == 0, result.output
    doc = json.loads(taught.read_text())
    assert doc["change"]["method"] == "taught" and doc["change"]["marked_pixels"] == 2
    areas = gpd.read_file(taught).to_crs(grid.crs)
    centres = [shapely.Point(grid.transform * (c, r)) for r, c in ((16, 16), (16, 106))]
    assert all(areas.contains(p).any() for p in centres)  # every building kept
    field = shapely.Point(grid.transform * (90.5, 100.5))  # the marked place in the shadowed field
    assert gpd.read_file(out).to_crs(grid.crs).contains(field).any()  # flagged without marks
    assert not areas.contains(field).any()  # not change once marked so
    assert len(list((tmp_path / "cache").glob("change/*.npz"))) == 1  # evidence cached for the next round
    with rasterio.open(tmp_path / "s.tif") as ds:
        assert ds.crs == grid.crs and ds.shape == grid.shape
    outside = tmp_path / "far.geojson"
    gpd.GeoDataFrame({"changed": [1]}, geometry=[shapely.Point(0, 0)], crs="EPSG:4326").to_file(outside)
    bad = CliRunner().invoke(cli, [*common, "--marks", str(outside), "-o", str(tmp_path / "x.geojson")])
    assert bad.exit_code == 2 and "lies on the pair" in bad.output and not (tmp_path / "x.geojson").exists()


def test_a_mark_answers_for_its_place():
    valid = np.ones((60, 60), bool)
    logit = np.full((60, 60), -5.0, np.float32)
    logit[5:15, 5:15] = 8.0  # a flagged area the user says is not change
    logit[30:40, 30:40] = 8.0  # another flagged area, unmarked
    logit[45:55, 5:20] = -1.0  # ground the score leans toward change, not flagged
    labels = np.full((60, 60), -1, np.int8)
    labels[9, 9] = 0
    labels[50, 10] = 1
    placed = mark_regions(logit, valid, labels, MarkRule())
    assert (placed[5:15, 5:15] < 0).all()  # the whole marked area cleared, not one pixel
    assert (placed[30:40, 30:40] == 8.0).all()  # the unmarked area kept
    assert (placed[45:55, 5:20] > 0).all() and (placed[58:, :] < 0).all()  # the leaning ground around the mark flagged, no further
    labels[12, 12] = 1  # marked both ways: the area keeps its answer
    assert (mark_regions(logit, valid, labels, MarkRule())[5:15, 5:15] > 0).all()
    lone = np.full((60, 60), -1, np.int8)
    lone[2, 50] = 1  # a "changed" click where nothing leans toward change still flags a place, not a pixel
    assert (mark_regions(logit, valid, lone, MarkRule()) > 0).sum() - (logit > 0).sum() >= 10


def _write_pairs(root, count=4, size=64, seed=0):
    """A/ B/ label/ PNG pairs: after = before plus bright squares (the change) and a global brightening (not change)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for side in ("A", "B", "label"):
        (root / side).mkdir(parents=True)
    for k in range(count):
        before = blob_image(size, size, centre=rng.integers(10, size - 10, 2), sigma=8, seed=k)
        after = np.clip(before.astype(int) + 25, 0, 255).astype(np.uint8)
        label = np.zeros((size, size), np.uint8)
        for _ in range(2):
            r, c = rng.integers(4, size - 16, 2)
            after[:, r : r + 12, c : c + 12] = [[[230]], [[90]], [[60]]]
            label[r : r + 12, c : c + 12] = 255
        Image.fromarray(before.transpose(1, 2, 0)).save(root / "A" / f"p{k}.png")
        Image.fromarray(after.transpose(1, 2, 0)).save(root / "B" / f"p{k}.png")
        Image.fromarray(label).save(root / "label" / f"p{k}.png")
    return root


def test_change_model_from_labelled_pairs(tmp_path, monkeypatch):
    monkeypatch.setenv("RSCBIR_CACHE", str(tmp_path / "cache"))
    pairs = _write_pairs(tmp_path / "pairs")
    model = tmp_path / "change.pt"
    small = ["--patch-size", "32", "--input-size", "64"]
    trained = CliRunner().invoke(cli, ["finetune-change", str(pairs), "--pairs", "p0.png,p1.png,p2.png", *small, "--epochs", "4", "-o", str(model)])
    assert trained.exit_code == 0, trained.output
    assert "trained on 3 pairs" in trained.output and model.exists()
    report = tmp_path / "eval.json"
    measured = CliRunner().invoke(cli, ["eval", "change", str(pairs), "--pairs", "p3.png", "--weights", str(model), "--marks", "1,3",
                                        "--seeds", "2", "--json", str(report)])  # fmt: skip
    assert measured.exit_code == 0, measured.output
    pooled = json.loads(report.read_text())["pooled"]
    assert set(pooled) >= {"label-free fusion", "label-free cva", "change model", "1 clicks", "3 clicks"}
    assert pooled["change model"]["f1"] > 0.5  # squares on a brightened scene: the model learnt which is change
    # the model refuses scenes read with other bands, naming what differs
    four = np.concatenate([blob_image(64, 64, (30, 30), seed=1), blob_image(64, 64, (30, 30), seed=1)[:1]])
    a = write_raster(tmp_path / "a_20190101.tif", four)
    b = write_raster(tmp_path / "b_20200101.tif", four)
    refused = CliRunner().invoke(cli, ["change", str(a), str(b), "--band-names", "R,G,B,NIR", *small, "--weights", str(model),
                                       "-o", str(tmp_path / "x.geojson")])  # fmt: skip
    assert refused.exit_code == 2 and "bands" in refused.output and not (tmp_path / "x.geojson").exists()
    unknown = CliRunner().invoke(cli, ["finetune-change", str(pairs), "--pairs", "nope.png", "-o", str(tmp_path / "y.pt")])
    assert unknown.exit_code == 2 and "no labelled pair named nope.png" in unknown.output


@pytest.mark.realdata
@pytest.mark.slow
def test_a_not_changed_mark_clears_a_real_area(real_data, tmp_path, monkeypatch):
    """OSCD Rennes: one "not changed" click on the top-ranked changed area removes that area (it once moved one pixel)."""
    monkeypatch.setenv("RSCBIR_CACHE", str(tmp_path / "cache"))
    city = real_data / "oscd" / "rennes"
    common = ["change", str(city / "imgs_1"), str(city / "imgs_2"), "--preset", "sentinel2", "--patch-size", "32"]
    first = CliRunner().invoke(cli, [*common, "-o", str(tmp_path / "first.geojson")])
    assert first.exit_code == 0, first.output
    before = gpd.read_file(tmp_path / "first.geojson")
    top = before.geometry.iloc[0]
    gpd.GeoDataFrame({"changed": [0]}, geometry=[top.representative_point()], crs=before.crs).to_file(tmp_path / "m.geojson")
    taught = CliRunner().invoke(cli, [*common, "--marks", str(tmp_path / "m.geojson"), "-o", str(tmp_path / "taught.geojson")])
    assert taught.exit_code == 0, taught.output
    after = gpd.read_file(tmp_path / "taught.geojson")
    assert not after.intersects(top.representative_point()).any()
    assert after.intersects(before.geometry.iloc[1].representative_point()).any()  # the next area stays
    assert abs(len(after) - len(before)) <= 3


@pytest.mark.realdata
def test_marks_on_two_dates_of_an_index(naip_index, tmp_path):
    """NAIP 2009 vs 2020 from the index (cosine, patch level): a "not changed" mark on a changed patch clears its
    group of adjacent changed patches; marks off the index are refused before anything is written."""
    common = ["change", "--index", str(naip_index), "--dates", "20090818", "20200831", "--method", "cosine"]
    plain = CliRunner().invoke(cli, [*common, "--all-patches", "-o", str(tmp_path / "all.geojson")])
    assert plain.exit_code == 0, plain.output
    patches = gpd.read_file(tmp_path / "all.geojson")
    target = patches[patches["changed"]].sort_values("score").iloc[0]  # the changed patch the score is least sure of
    mark = gpd.GeoDataFrame({"changed": [0]}, geometry=[target.geometry.centroid], crs=patches.crs)
    mark.to_file(tmp_path / "m.geojson")
    taught = CliRunner().invoke(cli, [*common, "--marks", str(tmp_path / "m.geojson"), "-o", str(tmp_path / "t.geojson")])
    assert taught.exit_code == 0, taught.output
    doc = json.loads((tmp_path / "t.geojson").read_text())
    assert doc["change"]["method"] == "taught" and doc["change"]["marked_patches"] >= 1
    assert doc["change"]["changed_patches"] < int(patches["changed"].sum())
    areas = gpd.read_file(tmp_path / "t.geojson")
    assert not areas.contains(target.geometry.centroid).any()
    far = tmp_path / "far.geojson"
    gpd.GeoDataFrame({"changed": [1]}, geometry=[shapely.Point(0, 0)], crs="EPSG:4326").to_file(far)
    bad = CliRunner().invoke(cli, [*common, "--marks", str(far), "-o", str(tmp_path / "x.geojson")])
    assert bad.exit_code == 2 and "lies on the pair's patches" in bad.output and not (tmp_path / "x.geojson").exists()

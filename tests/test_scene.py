import datetime as dt

import numpy as np
import pytest
from affine import Affine
from rasterio.windows import Window

from conftest import write_raster
from rscbir.errors import BandError, CRSError, DateError, InvalidSceneError, NoOverlapError, PresetError, ScalingError
from rscbir.presets import available_presets, load_preset
from rscbir.scene import Scaling, ScalingMode, Scene, normalise_date, parse_date


def test_open_single_file(rgb_tif):
    scene = Scene.open(rgb_tif)
    assert scene.scene_id == "scene_20200102"
    assert scene.band_names == ["B1", "B2", "B3"]
    assert scene.date == dt.date(2020, 1, 2)
    assert scene.grid.shape == (80, 100)
    assert scene.nodata == 0


def test_band_selection_by_name_and_index(rgb_tif):
    by_index = Scene.open(rgb_tif, bands=["3", "1"])
    by_name = Scene.open(rgb_tif, bands=["b3", "B1"], band_names=None)
    named = Scene.open(rgb_tif, band_names=["R", "G", "B"], bands=["B", "R"])
    assert by_index.band_names == by_name.band_names == ["B3", "B1"]
    assert named.band_names == ["B", "R"]
    with by_index.reader() as reader:
        data = reader.read(Window(0, 0, 5, 5))
    with Scene.open(rgb_tif).reader() as reader:
        full = reader.read(Window(0, 0, 5, 5))
    np.testing.assert_array_equal(data, full[[2, 0]])


def test_unknown_band_lists_available(rgb_tif):
    with pytest.raises(BandError, match="available: B1, B2, B3"):
        Scene.open(rgb_tif, bands=["B04"])
    with pytest.raises(BandError, match="out of range"):
        Scene.open(rgb_tif, bands=["4"])


def test_date_from_argument_and_tags(tmp_path, rgb_tif):
    assert Scene.open(rgb_tif, date="2021-03-04").date == dt.date(2021, 3, 4)
    tagged = write_raster(tmp_path / "plain.tif", np.ones((1, 4, 4), np.uint8), tags={"TIFFTAG_DATETIME": "2019:07:08 10:00:00"})
    assert Scene.open(tagged).date == dt.date(2019, 7, 8)
    undated = write_raster(tmp_path / "x.tif", np.ones((1, 4, 4), np.uint8))
    assert Scene.open(undated).date is None


def test_band_folder_stacks_mixed_resolutions_on_finest_grid(tmp_path):
    folder = tmp_path / "city" / "imgs_1"
    folder.mkdir(parents=True)
    fine = np.arange(40 * 40, dtype=np.uint16).reshape(1, 40, 40) + 1
    coarse = (np.arange(20 * 20, dtype=np.uint16).reshape(1, 20, 20) + 1) * 10
    write_raster(folder / "T_20170101_B02.tif", fine, transform=Affine(10, 0, 500000, 0, -10, 4500000))
    write_raster(folder / "T_20170101_B8A.tif", coarse, transform=Affine(20, 0, 500000, 0, -20, 4500000))
    write_raster(folder / "T_20170101_B11.tif", coarse, transform=Affine(20, 0, 500000, 0, -20, 4500000))
    scene = Scene.open(folder)
    assert scene.scene_id == "city_imgs_1"
    assert scene.band_names == ["B02", "B8A", "B11"]  # Sentinel-2 order, not alphabetical
    assert scene.grid.res == (10.0, 10.0) and scene.grid.shape == (40, 40)
    from rasterio.enums import Resampling

    with scene.reader(resampling=Resampling.nearest) as reader:
        data = reader.read(Window(0, 0, 40, 40))
    assert data.shape == (3, 40, 40)
    np.testing.assert_array_equal(data[0], fine[0])
    # each 20 m pixel covers 2 x 2 pixels of the 10 m grid
    np.testing.assert_array_equal(data[1], np.kron(coarse[0], np.ones((2, 2), np.uint16)))


def test_band_files_that_do_not_overlap(tmp_path):
    write_raster(tmp_path / "a_B02.tif", np.ones((1, 10, 10), np.uint16))
    write_raster(tmp_path / "a_B03.tif", np.ones((1, 10, 10), np.uint16), transform=Affine(10, 0, 900000, 0, -10, 4500000))
    with pytest.raises(NoOverlapError, match="does not overlap"):
        Scene.open(tmp_path)


def test_glob_of_band_files(tmp_path):
    for band in ("B02", "B03", "B04"):
        write_raster(tmp_path / f"s_{band}.tif", np.ones((1, 10, 10), np.uint16))
    assert Scene.open(str(tmp_path / "s_B0[34].tif")).band_names == ["B03", "B04"]


def test_no_crs_is_a_clear_error(tmp_path):
    path = write_raster(tmp_path / "nocrs.tif", np.ones((1, 8, 8), np.uint8), crs=None)
    with pytest.raises(CRSError, match="no CRS"):
        Scene.open(path)


def test_not_a_raster_and_missing_file(tmp_path):
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(InvalidSceneError, match="not a readable raster"):
        Scene.open(text)
    with pytest.raises(InvalidSceneError, match="no such file"):
        Scene.open(tmp_path / "missing.tif")


def test_truncated_file_fails_cleanly(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (3, 256, 256), dtype=np.uint8)
    path = write_raster(tmp_path / "t.tif", data)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InvalidSceneError):
        scene = Scene.open(path)
        with scene.reader() as reader:
            reader.read(Window(0, 0, 256, 256))


def test_scaling_rules(rgb_tif, tmp_path):
    scene = Scene.open(rgb_tif)
    assert scene.scaling.mode is ScalingMode.DIVIDE and scene.scaling.divisor == 255
    values = np.array([[[0, 255]]], dtype=np.uint8)
    np.testing.assert_allclose(scene.scale(values[[0, 0, 0]])[0], [[0.0, 1.0]])

    ramp = np.arange(1, 10001, dtype=np.uint16).reshape(1, 100, 100)
    s2 = Scene.open(write_raster(tmp_path / "ramp.tif", ramp))
    assert s2.scaling.mode is ScalingMode.PERCENTILE
    low, high = s2.band_stats()[0]
    assert low == pytest.approx(200, abs=2) and high == pytest.approx(9800, abs=2)
    scaled = s2.scale(ramp)
    assert scaled.min() == 0.0 and scaled.max() == 1.0

    fixed = Scene.open(write_raster(tmp_path / "ramp2.tif", ramp), scaling="divide:10000")
    assert fixed.scale(ramp).max() == pytest.approx(1.0)
    assert Scaling.parse("percentile:1,99") == Scaling(ScalingMode.PERCENTILE, low=1, high=99)
    with pytest.raises(ScalingError, match="unknown scaling 'stretch'"):
        Scaling.parse("stretch")
    with pytest.raises(ScalingError, match="bad scaling argument"):
        Scaling.parse("percentile:90,10")


def test_each_fault_has_its_own_error_class():
    """A bad date is a DateError and an unknown preset a PresetError (they used to be BandError / ModelError)."""
    assert parse_date("2020:08:31") == dt.date(2020, 8, 31) and normalise_date("20200831") == "2020-08-31"
    with pytest.raises(DateError, match="cannot read date 'yesterday'"):
        parse_date("yesterday")
    with pytest.raises(PresetError, match="unknown preset 'nope'; choose one of landsat, naip, rgb, sentinel2"):
        load_preset("nope")
    assert isinstance(DateError("x"), ValueError) and not issubclass(DateError, BandError)


def test_presets_ship_with_the_package(tmp_path, monkeypatch):
    """Presets are package data: found from any working directory, not only from a checkout."""
    monkeypatch.chdir(tmp_path)
    assert available_presets() == ["landsat", "naip", "rgb", "sentinel2"]
    assert load_preset("naip").band_names == ("R", "G", "B", "NIR")

"""Tiling on the shared real data sets (skipped when ../shared/data is absent)."""

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.windows import Window

from rscbir.catalog import read_catalog
from rscbir.cli import cli
from rscbir.scene import Scene
from rscbir.tiling import TilingConfig, aligned_grid, iter_patches

pytestmark = pytest.mark.realdata
NAIP = "naip_timeseries/m_4709963_se_14_1_{}.tif"


def test_oscd_band_folder_stacks_10_20_60m_on_10m_grid(real_data):
    folder = real_data / "oscd" / "paris" / "imgs_1"
    scene = Scene.open(folder)
    assert scene.count == 13 and scene.band_names[8] == "B8A"
    with rasterio.open(next(folder.glob("*_B02.tif"))) as b02, rasterio.open(next(folder.glob("*_B01.tif"))) as b01:
        assert scene.grid.shape == (b02.height, b02.width)
        coarse = b01.read(1).astype(float)
    with scene.reader() as reader:
        stack = reader.read(Window(0, 0, scene.grid.width, scene.grid.height))
        assert stack.shape == (13, scene.grid.height, scene.grid.width)
    with rasterio.open(next(folder.glob("*_B02.tif"))) as b02:
        np.testing.assert_array_equal(stack[1], b02.read(1))  # finest band passes through untouched
    # the 60 m band, averaged back over 6 x 6 blocks, matches the source 60 m pixels
    h, w = (scene.grid.height // 6) * 6, (scene.grid.width // 6) * 6
    pooled = stack[0, :h, :w].astype(float).reshape(h // 6, 6, w // 6, 6).mean(axis=(1, 3))
    r = np.corrcoef(pooled.ravel(), coarse[: h // 6, : w // 6].ravel())[0, 1]
    assert r > 0.9


def test_oscd_dates_align_on_date_one_grid(real_data):
    a = Scene.open(real_data / "oscd" / "paris" / "imgs_1", bands=["B04", "B03", "B02"])
    b = Scene.open(real_data / "oscd" / "paris" / "imgs_2", bands=["B04", "B03", "B02"])
    assert (a.date.isoformat(), b.date.isoformat()) == ("2016-11-30", "2017-11-07")
    grid = aligned_grid([a, b])
    assert grid.crs == a.grid.crs and grid.res == pytest.approx(a.grid.res)
    pa = [p.record for p in iter_patches(a, TilingConfig(32), grid, with_data=False)]
    pb = [p.record for p in iter_patches(b, TilingConfig(32), grid, with_data=False)]
    assert [(r.row, r.col, r.bounds) for r in pa] == [(r.row, r.col, r.bounds) for r in pb]


def test_naip_years_cover_same_ground_via_cli(real_data, tmp_path):
    out = tmp_path / "naip.parquet"
    result = CliRunner().invoke(cli, ["tile", str(real_data / NAIP.format("20090818")), str(real_data / NAIP.format("20200831")),
                                      "--align", "--patch-size", "320m", "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    catalog = read_catalog(out)
    old, new = (catalog[catalog["date"] == d].set_index(["row", "col"]) for d in ("2009-08-18", "2020-08-31"))
    assert len(old) == len(new) > 100
    for column in ("minx", "miny", "maxx", "maxy"):
        np.testing.assert_array_equal(old[column], new.loc[old.index, column])
    assert all(g1.equals_exact(g2, 1e-12) for g1, g2 in zip(old.geometry, new.loc[old.index].geometry))


def test_naip_aligned_patches_show_the_same_place(real_data):
    """Same (row, col) in 2009 and 2020 correlates far better than neighbouring patches."""
    a = Scene.open(real_data / NAIP.format("20090818"))
    b = Scene.open(real_data / NAIP.format("20200831"))
    grid = aligned_grid([a, b])
    assert (grid.width, grid.height) == (933, 722)  # 2020 sits 1 m off: one column/row lost
    patches_a = {(p.record.row, p.record.col): p.data[3].astype(float) for p in iter_patches(a, TilingConfig(64), grid)}
    patches_b = {(p.record.row, p.record.col): p.data[3].astype(float) for p in iter_patches(b, TilingConfig(64), grid)}
    same, shifted = [], []
    for (row, col), pa in patches_a.items():
        if (row, col) in patches_b and (row, col + 1) in patches_b:
            same.append(np.corrcoef(pa.ravel(), patches_b[(row, col)].ravel())[0, 1])
            shifted.append(np.corrcoef(pa.ravel(), patches_b[(row, col + 1)].ravel())[0, 1])
    assert len(same) > 100
    assert np.nanmedian(same) > np.nanmedian(shifted) + 0.3


def test_cog_in_web_mercator(real_data):
    scene = Scene.open(real_data / "rasterio" / "cogeo.tif")
    catalog = __import__("rscbir.catalog", fromlist=["tile_scene"]).tile_scene(scene, TilingConfig(256))
    assert len(catalog) == 16 and set(catalog["crs"]) == {"EPSG:3857"}
    lon, lat = catalog.geometry.iloc[0].centroid.coords[0]
    assert -180 <= lon <= 180 and -90 <= lat <= 90

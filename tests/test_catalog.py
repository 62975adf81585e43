import json

import geopandas as gpd
import numpy as np
import pytest
import shapely
from rasterio.crs import CRS
from rasterio.warp import transform_geom

from rscbir.catalog import COLUMNS, affine_of, read_catalog, write_catalog
from rscbir.errors import OutputError
from rscbir.scene import Scene
from rscbir.catalog import tile_scene
from rscbir.tiling import TilingConfig


@pytest.mark.parametrize("suffix", [".parquet", ".geojson"])
def test_round_trip_keeps_georeferencing(rgb_tif, tmp_path, suffix):
    catalog = tile_scene(Scene.open(rgb_tif), TilingConfig(32))
    path = write_catalog(catalog, tmp_path / f"cat{suffix}")
    back = read_catalog(path)
    assert list(back.columns) == [*COLUMNS, "geometry"]
    assert back.crs.to_epsg() == 4326
    assert list(back["patch_id"]) == list(catalog["patch_id"])
    row = back.iloc[-1]
    # the stored transform maps the window back onto the stored scene-CRS bounds
    transform = affine_of(row)
    assert transform * (0, 0) == pytest.approx((row["minx"], row["maxy"]))
    assert transform * (row["width"], row["height"]) == pytest.approx((row["maxx"], row["miny"]))
    # the EPSG:4326 polygon is the scene-CRS box reprojected
    expected = shapely.geometry.shape(transform_geom(CRS.from_string(row["crs"]), "EPSG:4326",
                                      shapely.geometry.mapping(shapely.box(row["minx"], row["miny"], row["maxx"], row["maxy"]))))  # fmt: skip
    assert row.geometry.equals_exact(expected, tolerance=1e-9)


def test_geojson_is_valid_feature_collection(rgb_tif, tmp_path):
    path = write_catalog(tile_scene(Scene.open(rgb_tif), TilingConfig(32)), tmp_path / "cat.geojson")
    doc = json.loads(path.read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 6
    assert gpd.read_file(path).crs.to_epsg() == 4326


def test_failed_write_leaves_previous_file(rgb_tif, tmp_path, monkeypatch):
    catalog = tile_scene(Scene.open(rgb_tif), TilingConfig(32))
    path = write_catalog(catalog, tmp_path / "cat.parquet")
    before = path.read_bytes()

    def boom(self, *args, **kwargs):
        with open(args[0], "wb") as handle:
            handle.write(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(gpd.GeoDataFrame, "to_parquet", boom)
    with pytest.raises(RuntimeError):
        write_catalog(catalog.iloc[:1], path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.parquet", rgb_tif.name]  # no temp file left


def test_unknown_format_and_missing_folder(rgb_tif, tmp_path):
    catalog = tile_scene(Scene.open(rgb_tif), TilingConfig(32))
    with pytest.raises(OutputError, match="unknown catalog format"):
        write_catalog(catalog, tmp_path / "cat.csv")
    with pytest.raises(OutputError, match="does not exist"):
        write_catalog(catalog, tmp_path / "nope" / "cat.parquet")


def test_empty_catalog_writes(tmp_path):
    data = np.zeros((1, 32, 32), np.uint8)
    from conftest import write_raster

    catalog = tile_scene(Scene.open(write_raster(tmp_path / "empty.tif", data, nodata=0)), TilingConfig(16))
    assert len(catalog) == 0
    assert len(read_catalog(write_catalog(catalog, tmp_path / "e.parquet"))) == 0

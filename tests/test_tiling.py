import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, reproject
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds

from conftest import UTM, blob_image, write_raster
from rscbir.errors import TilingError
from rscbir.scene import Scene
from rscbir.catalog import tile_scene, tile_scenes
from rscbir.tiling import EdgePolicy, TilingConfig, aligned_grid, iter_patches, length_in_pixels


def test_patch_bounds_equal_window_bounds_and_crs_kept(rgb_tif):
    scene = Scene.open(rgb_tif)
    patches = list(iter_patches(scene, TilingConfig(32, 16)))
    with rasterio.open(rgb_tif) as ds:
        for patch in patches:
            rec = patch.record
            assert tuple(rec.bounds) == pytest.approx(window_bounds(rec.window, ds.transform))
            assert rec.transform == ds.window_transform(rec.window)
            np.testing.assert_array_equal(patch.data, ds.read(window=rec.window))
    catalog = tile_scene(scene, TilingConfig(32, 16))
    assert set(catalog["crs"]) == {"EPSG:32618"}
    assert catalog.crs.to_epsg() == 4326


@pytest.mark.parametrize(
    "size, stride, edge, expected",
    [
        (32, 32, "drop", (2, 3)),  # 80 x 100 px: floor(80/32)=2 rows, floor(100/32)=3 cols
        (32, 16, "drop", (4, 5)),  # overlap: (80-32)//16+1, (100-32)//16+1
        (32, 32, "pad", (3, 4)),  # cover the edge: ceil(48/32)+1, ceil(68/32)+1
        (20, 40, "drop", (2, 3)),  # gaps between patches
    ],
)
def test_counts_for_stride_and_edge_policy(rgb_tif, size, stride, edge, expected):
    catalog = tile_scene(Scene.open(rgb_tif), TilingConfig(size, stride, EdgePolicy(edge), max_nodata=1.0))
    assert len(catalog) == expected[0] * expected[1]
    assert (catalog["row"].max() + 1, catalog["col"].max() + 1) == expected


def test_pad_fills_outside_with_nodata(rgb_tif):
    patches = list(iter_patches(Scene.open(rgb_tif), TilingConfig(32, 32, "pad", max_nodata=1.0)))
    last = patches[-1]
    assert (last.record.row, last.record.col) == (2, 3)
    assert last.data.shape == (3, 32, 32)
    # rows 64..79 and cols 96..99 hold data; the rest is padding
    assert (last.data[:, 16:, :] == 0).all() and (last.data[:, :, 4:] == 0).all()
    assert last.record.nodata_fraction == pytest.approx(1 - (16 * 4) / (32 * 32))


def test_nodata_patches_are_skipped(tmp_path):
    data = np.full((2, 64, 64), 7, np.uint16)
    data[:, :32, :32] = 65535  # top-left patch all nodata
    data[:, 32:, :32][:, :, :8] = 65535  # bottom-left patch 25 % nodata
    path = write_raster(tmp_path / "nd.tif", data, nodata=65535)
    kept = {(r.row, r.col): r.nodata_fraction for r in tile_scene(Scene.open(path), TilingConfig(32, max_nodata=0.2)).itertuples()}
    assert set(kept) == {(0, 1), (1, 1)}
    kept = {(r.row, r.col): r.nodata_fraction for r in tile_scene(Scene.open(path), TilingConfig(32, max_nodata=0.3)).itertuples()}
    assert kept[(1, 0)] == pytest.approx(0.25)


def test_all_zero_counts_as_nodata_without_declared_nodata(tmp_path):
    data = np.ones((1, 32, 64), np.uint16)
    data[:, :, :32] = 0
    path = write_raster(tmp_path / "zeros.tif", data)
    assert list(tile_scene(Scene.open(path), TilingConfig(32))["col"]) == [1]


def test_patch_larger_than_scene(rgb_tif):
    with pytest.raises(TilingError, match="larger than the scene"):
        list(iter_patches(Scene.open(rgb_tif), TilingConfig(128)))


def test_ground_unit_patch_size(rgb_tif):
    scene = Scene.open(rgb_tif)
    assert length_in_pixels("320m", scene.grid) == 32
    assert length_in_pixels("0.64km", scene.grid) == 64
    assert len(tile_scene(scene, TilingConfig("320m"))) == 6
    geographic = Scene.open(write_raster(rgb_tif.parent / "geo.tif", np.ones((1, 10, 10), np.uint8),
                                         crs=CRS.from_epsg(4326), transform=Affine(0.0001, 0, 0, 0, -0.0001, 0)))  # fmt: skip
    assert length_in_pixels("111m", geographic.grid) == pytest.approx(10, abs=1)  # 0.0001 deg ~ 11.1 m at the equator
    with pytest.raises(TilingError):
        length_in_pixels("big", scene.grid)


def _centroid(image):
    weights = np.clip(image.astype(float) - 100, 0, None)
    rows, cols = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    return (rows * weights).sum() / weights.sum(), (cols * weights).sum() / weights.sum()


def test_one_pixel_shift_aligns_exactly(tmp_path):
    world = blob_image(121, 120, centre=(60, 50))
    a_path = write_raster(tmp_path / "a.tif", world[:, 0:100, 0:100])
    # B starts one row lower on the ground: its row 0 is A's row 1
    b_path = write_raster(tmp_path / "b.tif", world[:, 1:101, 0:100], transform=Affine(10, 0, 500000, 0, -10, 4499990))
    a, b = Scene.open(a_path), Scene.open(b_path)
    grid = aligned_grid([a, b])
    assert grid.transform == Affine(10, 0, 500000, 0, -10, 4499990) and grid.shape == (99, 100)
    pa = {p.record.patch_id.split(":", 1)[1]: p for p in iter_patches(a, TilingConfig(32), grid)}
    pb = {p.record.patch_id.split(":", 1)[1]: p for p in iter_patches(b, TilingConfig(32), grid)}
    assert pa.keys() == pb.keys()
    for key in pa:
        assert pa[key].record.bounds == pb[key].record.bounds
        np.testing.assert_allclose(pa[key].data, pb[key].data, atol=1)


def test_reprojected_date_aligns_within_half_a_pixel(tmp_path):
    world = blob_image(96, 96, centre=(47.3, 52.6), sigma=3.0)
    transform = Affine(10, 0, 500000, 0, -10, 4500000)
    a_path = write_raster(tmp_path / "a.tif", world, transform=transform)
    dst_crs = CRS.from_epsg(4326)
    dst_transform, width, height = calculate_default_transform(UTM, dst_crs, 96, 96, *window_bounds(Window(0, 0, 96, 96), transform))
    warped = np.zeros((3, height, width), np.uint8)
    reproject(world, warped, src_transform=transform, src_crs=UTM, dst_transform=dst_transform, dst_crs=dst_crs,
              resampling=Resampling.cubic)  # fmt: skip
    b_path = write_raster(tmp_path / "b_wgs84.tif", warped, crs=dst_crs, transform=dst_transform)

    a, b = Scene.open(a_path), Scene.open(b_path)
    catalog = tile_scenes([a, b], TilingConfig(64, max_nodata=0.5), align=True)
    grid = aligned_grid([a, b])
    assert grid.crs == UTM
    rows = catalog.set_index(["scene_id", "row", "col"])
    assert rows.loc[("a", 0, 0), "geometry"].equals(rows.loc[("b_wgs84", 0, 0), "geometry"])

    window = Window(0, 0, grid.width, grid.height)
    with a.reader(grid) as ra, b.reader(grid) as rb:
        ca, cb = _centroid(ra.read(window)[0]), _centroid(rb.read(window)[0])
    assert abs(ca[0] - cb[0]) < 0.5 and abs(ca[1] - cb[1]) < 0.5


def test_duplicate_scene_ids_are_refused(rgb_tif):
    with pytest.raises(TilingError, match="occur twice"):
        tile_scenes([Scene.open(rgb_tif), Scene.open(rgb_tif)], TilingConfig(32))


def test_memory_is_bounded_by_strips(tmp_path, monkeypatch):
    """Reads never ask for more than one strip of patch rows."""
    data = np.ones((1, 300, 200), np.uint8)
    scene = Scene.open(write_raster(tmp_path / "tall.tif", data))
    from rscbir import scene as scene_module

    largest = []
    original = scene_module.SceneReader.read

    def spy(self, window):
        largest.append(window.height * window.width)
        return original(self, window)

    monkeypatch.setattr(scene_module.SceneReader, "read", spy)
    assert len(list(iter_patches(scene, TilingConfig(20)))) == 150
    assert max(largest) == 20 * 200

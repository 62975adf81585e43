import pytest
from affine import Affine
from rasterio.crs import CRS

from rscbir.errors import NoOverlapError
from rscbir.grid import Grid, common_grid

UTM = CRS.from_epsg(32618)


def grid(x0=500000.0, y0=4500000.0, w=100, h=80, res=10.0, crs=UTM):
    return Grid(crs, Affine(res, 0, x0, 0, -res, y0), w, h)


def test_bounds_and_res():
    g = grid()
    assert tuple(g.bounds) == (500000.0, 4499200.0, 501000.0, 4500000.0)
    assert g.res == (10.0, 10.0)
    assert g.shape == (80, 100)


def test_crop_keeps_pixel_positions():
    g = grid()
    cropped = g.crop((500015.0, 4499300.0, 500500.0, 4499995.0))
    # whole pixels inside: cols 2..49, rows 1..69
    assert cropped.transform == Affine(10, 0, 500020, 0, -10, 4499990)
    assert (cropped.width, cropped.height) == (48, 69)


def test_common_grid_is_reference_cropped_to_intersection():
    a = grid()
    b = grid(x0=500300.0, y0=4499900.0)  # 30 px right, 10 px down
    common = common_grid([a, b])
    assert common.transform == Affine(10, 0, 500300, 0, -10, 4499900)
    assert (common.width, common.height) == (70, 70)


def test_common_grid_across_crs_uses_reference_crs():
    a = grid()
    b = Grid(CRS.from_epsg(4326), Affine(0.001, 0, -76, 0, -0.001, 41), 2000, 2000)
    common = common_grid([a, b])
    assert common.crs == UTM
    assert common.res == (10.0, 10.0)


def test_no_overlap_is_a_clear_error():
    with pytest.raises(NoOverlapError, match="does not overlap"):
        common_grid([grid(), grid(x0=600000.0)], names=["a.tif", "b.tif"])

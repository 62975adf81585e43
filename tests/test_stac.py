"""STAC in: Items, ItemCollections and Catalogs over the real NAIP tiles and OSCD band files (built here with pystac)
index and tile exactly as the same files given by path; bad Items get one clear line."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.warp import transform_bounds

from conftest import DATA, NAIP
from rscbir.cli import cli
from rscbir.errors import BandError, InvalidSceneError
from rscbir.index import Index
from rscbir.scene import Scene

pytestmark = pytest.mark.realdata
OSCD_PARIS = DATA / "oscd" / "paris" / "imgs_1"
S2_COMMON = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir"}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _footprint(path) -> tuple[dict, list[float]]:
    with rasterio.open(path) as ds:
        w, s, e, n = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}, [w, s, e, n]


def _naip_item(day: str) -> pystac.Item:
    path = DATA / NAIP.format(day)
    geometry, bbox = _footprint(path)
    item = pystac.Item(path.stem, geometry, bbox, dt.datetime.strptime(day, "%Y%m%d"), {})
    bands = [{"name": n, "common_name": n} for n in ("red", "green", "blue", "nir")]
    item.add_asset("image", pystac.Asset(str(path), media_type=pystac.MediaType.GEOTIFF, roles=["data"], extra_fields={"eo:bands": bands}))
    item.add_asset("thumbnail", pystac.Asset("https://example.com/thumb.png", roles=["thumbnail"]))  # never read
    return item


@pytest.fixture(scope="module")
def naip_catalog(tmp_path_factory):
    if not DATA.is_dir():
        pytest.skip(f"real data folder {DATA} is absent")
    folder = tmp_path_factory.mktemp("stac")
    catalog = pystac.Catalog("naip", "two NAIP years")
    for day in ("20090818", "20200831"):
        catalog.add_item(_naip_item(day))
    catalog.normalize_hrefs(str(folder / "catalog"))
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return folder / "catalog" / "catalog.json"


def test_a_stac_catalog_indexes_exactly_as_the_paths_do(naip_catalog, naip_index, tmp_path):
    out = tmp_path / "idx"
    result = run("-q", "index", "build", naip_catalog, "--align", "--preset", "naip", "--patch-size", "320m", "-o", out)
    assert result.exit_code == 0, result.output
    by_stac, by_path = Index.open(out), Index.open(naip_index)
    assert [s.date for s in by_stac.manifest.scenes] == ["2009-08-18", "2020-08-31"]  # from the Items' datetime
    assert list(by_stac.catalog["patch_id"]) == list(by_path.catalog["patch_id"])
    np.testing.assert_array_equal(np.asarray(by_stac.vectors), np.asarray(by_path.vectors))
    answers = [json.loads(run("query", index, "--lonlat", "-99.1329", "47.0294", "-k", "8").stdout) for index in (out, naip_index)]
    assert [f["properties"]["patch_id"] for f in answers[0]["features"]] == [f["properties"]["patch_id"] for f in answers[1]["features"]]


def test_an_item_collection_file_filtered_by_date_and_box(naip_catalog, tmp_path):
    from rscbir.stac import stac_locations

    items = pystac.ItemCollection([_naip_item("20090818"), _naip_item("20200831")])
    path = tmp_path / "search.json"
    items.save_object(dest_href=str(path))
    assert stac_locations(str(path)) == [f"{path}#m_4709963_se_14_1_20090818", f"{path}#m_4709963_se_14_1_20200831"]
    assert stac_locations(str(path), [dt.date(2020, 8, 31)]) == [f"{path}#m_4709963_se_14_1_20200831"]
    assert len(stac_locations(str(path), bbox=(-99.2, 47.0, -99.1, 47.1))) == 2
    with pytest.raises(InvalidSceneError, match="no STAC item matches"):
        stac_locations(str(path), bbox=(2.0, 48.0, 2.5, 49.0))  # Paris: neither NAIP Item
    result = run("tile", path, "--date", "20200831", "--preset", "naip", "--patch-size", "320m", "-o", tmp_path / "t.parquet")
    assert result.exit_code == 0, result.output
    import geopandas as gpd

    tiles = gpd.read_parquet(tmp_path / "t.parquet")
    assert set(tiles["date"]) == {"2020-08-31"} and set(tiles["scene_id"]) == {"m_4709963_se_14_1_20200831"}
    missing = run("tile", path, "--date", "20150926", "-o", tmp_path / "m.parquet")
    assert missing.exit_code == 2 and "no STAC item matches" in missing.output and "2009-08-18, 2020-08-31" in missing.output


def _oscd_item(folder: Path, relative: bool) -> Path:
    """Sentinel-2 band files of OSCD Paris as the assets of one Item, hrefs relative to the Item's file."""
    files = sorted(OSCD_PARIS.glob("*_B*.tif"))
    geometry, bbox = _footprint(files[1])
    item = pystac.Item("paris_2016", geometry, bbox, dt.datetime(2016, 11, 30), {})
    for path in files:
        band = path.stem.split("_")[-1]
        href = os.path.relpath(path, folder) if relative else str(path)
        extra = {"eo:bands": [{"name": band, **({"common_name": S2_COMMON[band]} if band in S2_COMMON else {})}]}
        item.add_asset(band, pystac.Asset(href, media_type=pystac.MediaType.GEOTIFF, roles=["data"], extra_fields=extra))
    target = folder / "paris_2016.json"
    target.write_text(json.dumps(item.to_dict(include_self_link=False)))
    return target


def test_band_files_of_an_item_by_common_name_with_relative_hrefs(tmp_path):
    if not OSCD_PARIS.is_dir():
        pytest.skip(f"{OSCD_PARIS} is absent")
    item = _oscd_item(tmp_path, relative=True)
    by_stac = Scene.open(item, bands=["red", "green", "blue", "nir"])
    by_path = Scene.open(OSCD_PARIS, bands=["B04", "B03", "B02", "B08"])
    assert by_stac.band_names == ["B04", "B03", "B02", "B08"] and by_stac.date == dt.date(2016, 11, 30)
    assert [(Path(s.path).resolve(), s.index) for s in by_stac.sources] == [(Path(s.path).resolve(), s.index) for s in by_path.sources]
    assert by_stac.grid == by_path.grid
    with by_stac.reader() as a, by_path.reader() as b:
        window = rasterio.windows.Window(100, 100, 64, 64)
        np.testing.assert_array_equal(a.read(window), b.read(window))


def test_bad_items_name_what_is_wrong(tmp_path):
    if not OSCD_PARIS.is_dir():
        pytest.skip(f"{OSCD_PARIS} is absent")
    item = _oscd_item(tmp_path, relative=False)
    with pytest.raises(BandError, match=r"no band 'swir22'; it has B01, B02 \(blue\)"):
        Scene.open(item, bands=["red", "swir22"])
    result = run("tile", item, "--bands", "red,swir22", "-o", tmp_path / "x.parquet")
    assert result.exit_code == 2 and "no band 'swir22'" in result.output and "Traceback" not in result.output
    doc = json.loads(item.read_text())
    doc["assets"]["B04"]["href"] = str(tmp_path / "gone_B04.tif")
    item.write_text(json.dumps(doc))
    result = run("tile", item, "--bands", "red", "-o", tmp_path / "x.parquet")
    assert result.exit_code == 2 and f"asset 'B04' points to {tmp_path / 'gone_B04.tif'}, which does not exist" in result.output
    assert not (tmp_path / "x.parquet").exists()

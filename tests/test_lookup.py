"""Queries answered from the segments' memory-mapped lookups agree with the full catalog, and never load it."""

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import shapely

from rscbir.index import segment as index_segment
from rscbir.catalog import metres_from, patch_centres
from rscbir.index import Index
from rscbir.query import Filters, QueryExpansion, patch_at, query_patch, query_point
from test_segments import appended
from test_index import scenes


@pytest.fixture
def segmented(tmp_path):
    """Four self-written scenes appended one by one: four segments, footprints reprojected from UTM."""
    return Index.open(appended(tmp_path, scenes(tmp_path, 4)))


@pytest.fixture
def compacted(tmp_path, segmented):
    """The four segments merged into one by compaction, after removing a scene: the lookup is merged from the
    segments' lookups (never rebuilt from the catalog), so it must still agree with the catalog."""
    from rscbir.index import compact_index, remove_from_index

    copy = tmp_path / "compacted"
    shutil.copytree(segmented.path, copy)
    remove_from_index(copy, ["s1_20200102"])
    return compact_index(copy)[0]


def boxes_around(catalog, rng, count=40):
    """Random lon/lat boxes: inside, across and outside the indexed area, from a sliver to the whole."""
    west, south, east, north = catalog.total_bounds
    w, h = east - west, north - south
    for _ in range(count):
        x0, y0 = west + (rng.random() * 1.4 - 0.2) * w, south + (rng.random() * 1.4 - 0.2) * h
        size = rng.choice([0.01, 0.1, 0.3, 1.5])
        yield (float(x0), float(y0), float(x0 + size * w), float(y0 + size * h))


@pytest.mark.parametrize("which", ["segmented", "compacted", "naip_index"])
@pytest.mark.parametrize("bisect_limit", [64, 0])  # cell rows found by binary search in the file, or by one read of all keys
def test_lookup_answers_equal_the_catalog(which, bisect_limit, request, monkeypatch):
    """Box, point, radius, id and row lookups give exactly what the GeoDataFrame catalog gives."""
    monkeypatch.setattr("rscbir.index.lookup.BISECT_LIMIT", bisect_limit)
    index = request.getfixturevalue(which)
    index = Index.open(index) if not isinstance(index, Index) else index
    catalog = Index.open(index.path).catalog
    rng = np.random.default_rng(0)
    for box in boxes_around(catalog, rng):
        expected = np.sort(catalog.sindex.query(shapely.box(*box), predicate="intersects"))
        np.testing.assert_array_equal(index.in_box(box), expected)
    west, south, east, north = catalog.total_bounds
    for lon, lat in zip(rng.uniform(west, east, 30), rng.uniform(south, north, 30)):
        expected = np.flatnonzero(catalog.geometry.covers(shapely.Point(lon, lat)).to_numpy())
        np.testing.assert_array_equal(np.sort(index.covering(lon, lat)), expected)
        np.testing.assert_array_equal(np.sort(index.within(lon, lat, 400.0)), np.flatnonzero(metres_from(catalog, lon, lat) <= 400.0))
    ids = rng.permutation(len(index))[:50]
    np.testing.assert_array_equal(index.rows_of(catalog["patch_id"].to_numpy()[ids]), ids)
    assert list(index.rows_of(["nowhere:1:1", "garbage", f"{catalog['scene_id'].iloc[0]}:999:999"])) == [-1, -1, -1]
    light = index.patches(ids)
    for name in ("patch_id", "scene_id", "date", "row", "col"):
        assert list(light[name]) == list(catalog[name].to_numpy()[ids])
    assert all(a.equals(b) for a, b in zip(light.geometry, catalog.geometry.to_numpy()[ids]))
    np.testing.assert_allclose(index.centres(ids), patch_centres(catalog.iloc[ids]))
    full = index.catalog_rows(ids)
    assert list(full["patch_id"]) == list(catalog["patch_id"].to_numpy()[ids]) and list(full["vector"]) == list(ids)
    assert [list(t) for t in full["transform"]] == [list(t) for t in catalog["transform"].to_numpy()[ids]]
    assert index.bounds == pytest.approx(tuple(catalog.total_bounds))


def test_a_query_never_reads_the_catalog(segmented, monkeypatch):
    """Open + point, patch and filtered queries read only the memory-mapped lookups: the catalog stays on disk
    (at 10M patches it would not fit in memory)."""
    path = segmented.path
    index = Index.open(path)
    catalog = Index.open(path).catalog
    expected = query_patch(Index.open(path), catalog["patch_id"].iloc[20], 5, Filters(exclude_radius=50.0), QueryExpansion(2))

    def refuse(*args, **kwargs):
        raise AssertionError("the query read a whole catalog")

    monkeypatch.setattr(index_segment, "read_catalog", refuse)
    monkeypatch.setattr(index_segment.gpd, "read_parquet", refuse)
    result = query_patch(index, catalog["patch_id"].iloc[20], 5, Filters(exclude_radius=50.0), QueryExpansion(2))
    assert list(result.hits["patch_id"]) == list(expected.hits["patch_id"])
    lon, lat = patch_centres(catalog.iloc[[33]])[0]
    assert patch_at(index, lon, lat) == 33 or catalog["date"].iloc[patch_at(index, lon, lat)] >= catalog["date"].iloc[33]
    west, south, east, north = catalog.total_bounds
    box = (west, south, (west + east) / 2, (south + north) / 2)
    boxed = query_point(index, lon, lat, 4, filters=Filters(bbox=box, dates=("2020-01-02",)), expansion=QueryExpansion(0))
    assert len(boxed.hits) and set(boxed.hits["date"]) == {"2020-01-02"}
    assert all(shapely.intersects(g, shapely.box(*box)) for g in boxed.hits.geometry)
    assert "catalog" not in index.__dict__


def test_segments_written_before_lookups_still_open(tmp_path, segmented):
    """An index whose segments have no lookup files (written by rscbir before them) opens and answers the same."""
    old = tmp_path / "old"
    shutil.copytree(segmented.path, old)
    manifest = json.loads((old / "index.json").read_text())
    for record in manifest["segments"]:
        for key in ("lookup", "cells"):
            name = record["files"].pop(key)
            manifest["checksums"].pop(name)
            (old / name).unlink()
        record.pop("lookup")
    (old / "index.json").write_text(json.dumps(manifest))
    reopened = Index.open(old)
    catalog = segmented.catalog
    picks = catalog["patch_id"].to_numpy()[::7]
    np.testing.assert_array_equal(reopened.rows_of(picks), segmented.rows_of(picks))
    west, south, east, north = catalog.total_bounds
    box = (west, south, (west + east) / 2, north)
    np.testing.assert_array_equal(reopened.in_box(box), segmented.in_box(box))
    first = query_patch(segmented, picks[3], 6, Filters(), QueryExpansion(0))
    again = query_patch(reopened, picks[3], 6, Filters(), QueryExpansion(0))
    assert list(first.hits["patch_id"]) == list(again.hits["patch_id"])


def test_point_and_patch_queries_never_load_torch(segmented, tmp_path):
    """Only an image query runs the model: `rscbir query --patch-id/--lonlat` starts without torch (0.5 s and
    ~0.5 GiB less), which is what keeps a 10M-patch query under 2 GiB."""
    lon, lat = Index.open(segmented.path).centres([5])[0]
    code = textwrap.dedent(f"""
        import sys
        from click.testing import CliRunner
        from rscbir.cli import cli
        for how in (["--patch-id", "s1_20200102:1:1"], ["--lonlat", "{lon}", "{lat}", "--bbox", "-180", "-90", "180", "90"]):
            result = CliRunner().invoke(cli, ["query", "{segmented.path}", *how, "-k", "3", "-o", "{tmp_path / 'out.geojson'}"])
            assert result.exit_code == 0, result.output
        print("torch" in sys.modules)
    """)
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert child.stdout.strip().splitlines()[-1] == "False"

"""Pixel change maps made in strips of rows (rscbir.change.streamed): the same map as made whole, in flat memory."""

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner

from conftest import blob_image, write_raster
from rscbir.change import change_map, detect, score_change, stream_change
from rscbir.change.cnn import OnnxPairDistances, cnn_distances
from rscbir.change.scores import PixelMosaic, RollingMosaic
from rscbir.cli import cli
from rscbir.grid import Grid
from rscbir.models.options import ModelOptions
from rscbir.scene import Scene
from rscbir.tiling import EdgePolicy, TilingConfig, iter_patches

SMALL_MODEL = ModelOptions(input_size=64)


@pytest.fixture
def tall_pair(tmp_path):
    """A 200 x 96 px pair: after = before + two bright new blocks, one of them tall enough to cross many strips,
    and an acquisition's own noise everywhere."""
    before = blob_image(200, 96, centre=(150, 30), sigma=12, seed=2).astype(np.float32)
    before = np.clip(before + np.random.default_rng(3).normal(0, 6, before.shape[1:]), 1, 255)
    after = np.clip(before + np.random.default_rng(4).normal(0, 3, before.shape), 1, 255)
    after[:, 20:130, 50:70] = [[[245]], [[235]], [[225]]]  # crosses every strip of 16 rows from 16 to 128
    after[:, 160:176, 8:24] = [[[20]], [[200]], [[40]]]
    a = write_raster(tmp_path / "before_20190101.tif", before.astype(np.uint8), nodata=0)
    b = write_raster(tmp_path / "after_20200101.tif", after.astype(np.uint8), nodata=0)
    return a, b


def _same_areas(whole: gpd.GeoDataFrame, streamed: gpd.GeoDataFrame) -> None:
    assert len(whole) == len(streamed) > 0
    w = whole.sort_values(["score", "pixels"], ignore_index=True)
    s = streamed.sort_values(["score", "pixels"], ignore_index=True)
    assert (w["pixels"].to_numpy() == s["pixels"].to_numpy()).all()
    for column in ("score", "max_score", "mean_score"):
        np.testing.assert_allclose(s[column], w[column], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(s["area_m2"], w["area_m2"], rtol=1e-6)  # outlines joined across strips keep extra vertices
    for a, b in zip(w.geometry, s.geometry):
        assert a.symmetric_difference(b).area <= 1e-6 * a.area  # the same outline (traced in strips, joined; float slivers)


@pytest.mark.parametrize("method", ["cva", "fusion"])
def test_map_made_in_strips_equals_the_map_made_whole(tall_pair, tmp_path, method):
    """Strips of 16 rows (13 strips, with a patch of 32 px and a Gaussian reaching 4 rows): no seam anywhere;
    the areas, the score COG and the preview's mask are those of the whole map."""
    tiling = TilingConfig(32, stride=24)  # overlapping patches: the rolling mosaic averages across strips
    whole = detect(*tall_pair, method, tiling=tiling, model_options=SMALL_MODEL)
    before, after = Scene.open(tall_pair[0]), Scene.open(tall_pair[1])
    streamed = stream_change(before, after, method, tiling=tiling, model_options=SMALL_MODEL, strip_rows=16, scores_path=tmp_path / "s.tif")
    assert streamed.summary == whole.summary
    _same_areas(whole.areas, streamed.areas)
    tall = shapely.box(*rasterio.windows.bounds(rasterio.windows.Window(50, 20, 20, 110), before.grid.transform))
    tall = gpd.GeoSeries([tall], crs=before.grid.crs).to_crs(4326).iloc[0]
    crossing = streamed.areas[streamed.areas.intersects(tall)]
    assert len(crossing) == 1 and crossing.geometry.iloc[0].intersection(tall).area > 0.5 * tall.area  # one area, not 7 pieces
    with rasterio.open(tmp_path / "s.tif") as cog:
        assert cog.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and cog.transform == before.grid.transform
        np.testing.assert_array_equal(cog.read(1), whole.scores.pixels[method].astype(np.float32))
        assert cog.tags()["method"] == method
    view = streamed.view
    np.testing.assert_array_equal(view.mask, whole.mask[np.ix_(view.rows, view.cols)])


def test_large_maps_take_their_cut_from_a_sample(tall_pair):
    """Past the sample size (here forced to 2,000 of 19,200 pixels) the centre, spread and cut are estimated from a
    regular sample: the planted blocks are still the changed areas and the cut lies near the exact one."""
    before, after = Scene.open(tall_pair[0]), Scene.open(tall_pair[1])
    exact = stream_change(before, after, "cva", tiling=TilingConfig(32), strip_rows=40)
    sampled = stream_change(before, after, "cva", tiling=TilingConfig(32), strip_rows=40, sample_pixels=2000)
    assert abs(sampled.summary["threshold"] - exact.summary["threshold"]) < 0.1 * exact.summary["threshold"]
    exact_union, sampled_union = exact.areas.geometry.union_all(), sampled.areas.geometry.union_all()
    assert exact_union.symmetric_difference(sampled_union).area < 0.1 * exact_union.area


def test_rolling_mosaic_hands_over_the_rows_the_whole_mosaic_holds(tall_pair):
    """Patches of 32 px every 20 px, the last row and column moved inward (FIT): rows handed over as the patches
    pass equal the whole mosaic, NaN where no patch lies."""
    scene = Scene.open(tall_pair[0])
    grid = Grid(scene.grid.crs, scene.grid.transform, 90, 190)
    tiling = TilingConfig(32, stride=20, edge=EdgePolicy.FIT)
    whole, rows = PixelMosaic(grid), {}
    rolling = RollingMosaic(grid, 32, lambda first, block: rows.update({first + i: r for i, r in enumerate(block)}))
    for patch in iter_patches(scene, tiling, grid):
        value = patch.data[:1].astype(np.float32) / (1 + patch.record.col)
        whole.add([patch.record], value[:, None][0])
        rolling.add([patch.record], value[:, None][0])
    rolling.close()
    assert sorted(rows) == list(range(grid.height))
    np.testing.assert_array_equal(np.stack([rows[r] for r in range(grid.height)]), whole.result())


def test_onnx_runtime_pair_distances_equal_torch(tall_pair):
    """The CPU default scores patch pairs in ONNX Runtime: the distances torch gives, to 1e-4."""
    from rscbir.models.load import model_for_scenes

    before, after = Scene.open(tall_pair[0]), Scene.open(tall_pair[1])
    model, (b, a) = model_for_scenes([before, after], None, SMALL_MODEL)
    patches = [(p.data, q.data) for p, q in zip(iter_patches(b, TilingConfig(32)), iter_patches(a, TilingConfig(32)))][:6]
    xb, xa = np.stack([p for p, _ in patches]), np.stack([q for _, q in patches])
    torch_out = cnn_distances(model.eval(), xb, xa, b.scale, a.scale, True)
    onnx_out = OnnxPairDistances(model, True)(model, xb, xa, b.scale, a.scale, True)
    assert set(onnx_out) == set(torch_out) == {"cosine", "multilayer", "dense", "dense_map"}
    for name in torch_out:
        np.testing.assert_allclose(onnx_out[name], torch_out[name], atol=1e-4)
    assert torch_out["dense"].max() > 0.05  # the new block is seen, not a map of zeros


def test_cli_pixel_change_streams_and_writes_every_output(tall_pair, tmp_path):
    """`rscbir change` at pixel level runs in strips: GeoJSON, COG and preview as before, the areas those of the
    Python API's whole map."""
    out, cog, png = tmp_path / "c.geojson", tmp_path / "s.tif", tmp_path / "p.png"
    result = CliRunner().invoke(cli, ["change", *map(str, tall_pair), "--patch-size", "32", "--input-size", "64", "-o", str(out),
                                      "--scores", str(cog), "--preview", str(png)])  # fmt: skip
    assert result.exit_code == 0, result.output
    whole = detect(*tall_pair, tiling=TilingConfig(32), model_options=SMALL_MODEL)
    assert json.loads(out.read_text())["change"] == whole.summary
    _same_areas(whole.areas, gpd.read_file(out))
    assert png.stat().st_size > 0 and cog.exists()


def test_identical_dates_stream_to_no_change(tall_pair):
    before = Scene.open(tall_pair[0])
    found = stream_change(before, Scene.open(tall_pair[0]), "cva", tiling=TilingConfig(32), strip_rows=30)
    assert found.areas.empty and found.summary["changed_pixels"] == 0


def test_whole_and_streamed_patch_scores_agree(tall_pair):
    """The per-patch table rides along with the streamed map: the same scores as the whole scoring."""
    before, after = Scene.open(tall_pair[0]), Scene.open(tall_pair[1])
    whole = change_map(score_change(before, after, None, TilingConfig(32), pixel_maps=True), "cva")
    streamed = stream_change(before, after, "cva", tiling=TilingConfig(32), strip_rows=25)
    np.testing.assert_array_equal(streamed.scores.patches["cva"].to_numpy(), whole.scores.patches["cva"].to_numpy())


def test_pixel_change_runs_without_torch_once_its_graph_is_cached(tall_pair, tmp_path):
    """The first `rscbir change` exports the pair graph into the cache (RSCBIR_CACHE); the next runs load only
    ONNX Runtime, never torch, and write the same changed areas. A damaged graph is made again."""
    import os
    import subprocess
    import sys
    import textwrap

    def run(out):
        code = textwrap.dedent(f"""
            import sys
            from click.testing import CliRunner
            from rscbir.cli import cli
            result = CliRunner().invoke(cli, ["change", "{tall_pair[0]}", "{tall_pair[1]}", "--patch-size", "32", "--input-size", "64",
                                              "-o", "{out}"])
            assert result.exit_code == 0, result.output
            print("torch" in sys.modules)
        """)
        env = {**os.environ, "RSCBIR_CACHE": str(tmp_path / "cache")}
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout.split()[-1]

    assert run(tmp_path / "first.geojson") == "True"  # the first run builds the model and caches its pair graph
    graphs = list((tmp_path / "cache" / "onnx").glob("*-pair-*/pair_32.onnx"))
    assert len(graphs) == 1
    assert run(tmp_path / "second.geojson") == "False"
    assert (tmp_path / "second.geojson").read_text() == (tmp_path / "first.geojson").read_text()
    graphs[0].write_bytes(graphs[0].read_bytes()[:1000])  # truncated: made again, with a warning, not a failure
    assert run(tmp_path / "third.geojson") == "True"
    assert (tmp_path / "third.geojson").read_text() == (tmp_path / "first.geojson").read_text()
    assert run(tmp_path / "fourth.geojson") == "False"

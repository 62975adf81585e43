"""Indexing on a Dask cluster gives the single-process result, survives a killed worker,
and skips a corrupt scene among many."""

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import blob_image, with_a_worker_killed, write_raster
from rscbir.cli import cli
from rscbir.embed import EmbedOptions, embed_scenes
from rscbir.index import Index
from rscbir.models.load import load_feature_model
from rscbir.scale import DaskRunner
from rscbir.scene import Scene
from rscbir.tiling import TilingConfig

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.slow


def scene_files(tmp_path, n=2, size=192):
    return [write_raster(tmp_path / f"tile{i}_2021060{i + 1}.tif", blob_image(size, size, (40 + 30 * i, 90), 8, seed=i), nodata=0)
            for i in range(n)]  # fmt: skip


def embed(paths, out, client=None):
    scenes = [Scene.open(p) for p in paths]
    model = load_feature_model(scenes[0].band_names, input_size=32)
    options = EmbedOptions(batch_size=8, workers=0, runtime="torch", dtype="float32", dim=None)  # raw vectors: compared to 1e-5
    runner = DaskRunner(client, model, options) if client is not None else None
    return embed_scenes(scenes, out, model, TilingConfig(16), options=options, runner=runner)


def test_cluster_result_equals_single_process(tmp_path, cluster):
    paths = scene_files(tmp_path)
    local = embed(paths, tmp_path / "local")
    spread = embed(paths, tmp_path / "dask", client=cluster)
    assert list(spread.catalog["patch_id"]) == list(local.catalog["patch_id"])
    np.testing.assert_allclose(np.asarray(spread.vectors), np.asarray(local.vectors), atol=1e-5)


def test_killed_worker_loses_and_duplicates_nothing(tmp_path, cluster):
    paths = scene_files(tmp_path, n=2, size=320)
    reference = embed(paths, tmp_path / "reference")
    store = with_a_worker_killed(cluster, lambda: embed(paths, tmp_path / "dask", client=cluster))
    assert store.catalog["patch_id"].is_unique
    assert list(store.catalog["patch_id"]) == list(reference.catalog["patch_id"])
    np.testing.assert_allclose(np.asarray(store.vectors), np.asarray(reference.vectors), atol=1e-5)


def test_corrupt_scene_among_many_gives_partial_index(tmp_path):
    good = scene_files(tmp_path, n=2, size=64)
    junk = tmp_path / "junk_20210101.tif"
    junk.write_bytes(b"II*\x00 not really a tiff")
    truncated = write_raster(tmp_path / "cut_20210105.tif", np.random.default_rng(0).integers(1, 255, (3, 400, 400), dtype=np.uint8))
    truncated.write_bytes(truncated.read_bytes()[:60000])
    out = tmp_path / "idx"
    result = CliRunner().invoke(cli, ["index", "build", str(good[0]), str(junk), str(truncated), str(good[1]), "--patch-size", "16",
                                      "--input-size", "32", "--runtime", "torch", "-o", str(out)])  # fmt: skip
    assert result.exit_code == 3, result.output
    assert "2 FAILED and skipped" in result.output and "junk_20210101.tif" in result.output
    index = Index.open(out)
    assert set(index.catalog["scene_id"]) == {"tile0_20210601", "tile1_20210602"}


def test_scheduler_local_cli(tmp_path):
    paths = scene_files(tmp_path, n=2, size=64)
    out = tmp_path / "idx"
    result = CliRunner().invoke(cli, ["-q", "index", "build", *map(str, paths), "--patch-size", "16", "--input-size", "32",
                                      "--scheduler", "local", "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(Index.open(out)) == 32


def change_pair(tmp_path, size=192):
    """A pair with a bright new block that spans several patch rows (so several Dask tasks)."""
    before = blob_image(size, size, (size - 40, 40), 12, seed=7).astype(np.float32)
    before = np.clip(before + np.random.default_rng(8).normal(0, 6, before.shape[1:]), 1, 255)
    after = np.clip(before + np.random.default_rng(9).normal(0, 3, before.shape), 1, 255)
    after[:, 30 : size - 60, 70:100] = [[[245]], [[235]], [[225]]]
    return (write_raster(tmp_path / "before_20190101.tif", before.astype(np.uint8), nodata=0),
            write_raster(tmp_path / "after_20200101.tif", after.astype(np.uint8), nodata=0))  # fmt: skip


def stream(paths, client=None, strip_rows=40, scores=None):
    from rscbir.change import stream_change
    from rscbir.models.options import ModelOptions

    return stream_change(Scene.open(paths[0]), Scene.open(paths[1]), "fusion", tiling=TilingConfig(16), strip_rows=strip_rows,
                         model_options=ModelOptions(input_size=32), client=client, scores_path=scores)  # fmt: skip


def assert_same_change(found, reference):
    assert found.summary == reference.summary
    assert found.areas.drop(columns="geometry").equals(reference.areas.drop(columns="geometry"))
    assert all(a.equals(b) for a, b in zip(found.areas.geometry, reference.areas.geometry))
    columns = ["row", "col", "cva", "cosine", "multilayer", "dense", "fusion"]
    assert found.scores.patches[columns].equals(reference.scores.patches[columns])


def test_dask_change_equals_one_process(tmp_path, cluster):
    """`rscbir change --scheduler`: the patch rows are scored by workers, in 12 tasks; the per-patch table, the
    changed areas and the score COG are those of one process, exactly."""
    paths = change_pair(tmp_path)
    reference = stream(paths, scores=tmp_path / "one.tif")
    spread = stream(paths, client=cluster, scores=tmp_path / "dask.tif")
    assert len(reference.areas) >= 1 and reference.summary["changed_pixels"] > 500
    assert_same_change(spread, reference)
    import rasterio

    with rasterio.open(tmp_path / "one.tif") as one, rasterio.open(tmp_path / "dask.tif") as dask:
        np.testing.assert_array_equal(dask.read(1), one.read(1))


def test_dask_change_survives_a_killed_worker(tmp_path, cluster):
    paths = change_pair(tmp_path, size=320)
    reference = stream(paths)
    assert_same_change(with_a_worker_killed(cluster, lambda: stream(paths, client=cluster)), reference)


def test_change_scheduler_local_cli(tmp_path):
    paths = change_pair(tmp_path, size=96)
    out = tmp_path / "c.geojson"
    result = CliRunner().invoke(cli, ["-q", "change", *map(str, paths), "--patch-size", "16", "--input-size", "32", "--scheduler", "local",
                                      "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    single = CliRunner().invoke(cli, ["-q", "change", *map(str, paths), "--patch-size", "16", "--input-size", "32", "-o", str(tmp_path / "one.geojson")])
    assert single.exit_code == 0, single.output
    assert out.read_text() == (tmp_path / "one.geojson").read_text()
    refused = CliRunner().invoke(cli, ["change", *map(str, paths), "--level", "patch", "--scheduler", "local", "-o", str(tmp_path / "p.geojson")])
    assert refused.exit_code == 2 and "--scheduler" in refused.output

"""Indexing on a Dask cluster gives the single-process result, survives a killed worker,
and skips a corrupt scene among many."""

import os
import signal
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import blob_image, write_raster
from rscbir.cli import cli
from rscbir.embed import EmbedOptions, embed_scenes
from rscbir.index import Index
from rscbir.models.load import load_feature_model
from rscbir.scale import DaskRunner
from rscbir.scene import Scene
from rscbir.tiling import TilingConfig

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        with distributed.Client(local) as client:
            yield client


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
    result: dict = {}
    runner = threading.Thread(target=lambda: result.setdefault("store", embed(paths, tmp_path / "dask", client=cluster)))
    runner.start()
    deadline = time.time() + 60
    while time.time() < deadline and not any(cluster.processing().values()):
        time.sleep(0.01)
    time.sleep(0.3)  # let tasks get under way
    victim = next(iter(cluster.run(os.getpid).values()))
    os.kill(victim, signal.SIGKILL)
    runner.join(timeout=300)
    store = result["store"]
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

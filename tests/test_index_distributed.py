"""`rscbir index build --scheduler`: the workers write the segments themselves, and the index answers as the one
built in one process (same patches in the same order, same vectors, same neighbours), with a worker killed too."""

import os

import numpy as np
import pytest

from conftest import blob_image, write_raster
from rscbir.index import Index, build_index, verify_index
from rscbir.index import distributed as spread
from rscbir.index import writers
from rscbir.models.load import load_feature_model
from rscbir.scale import DaskRunner
from rscbir.scene import Scene
from rscbir.store import EmbedOptions
from rscbir.tiling import TilingConfig

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.slow
OPTIONS = EmbedOptions(batch_size=16, workers=0, runtime="torch", dtype="float32")  # compared to 1e-5


@pytest.fixture
def dates(tmp_path):
    """Two dates of the same 192 x 192 px ground (the second a little darker, one new blob): 144 patches each."""
    first = blob_image(192, 192, (60, 90), 10, seed=3)
    second = (first * 0.9).astype(np.uint8) + blob_image(192, 192, (140, 40), 8, seed=4) // 4
    return [write_raster(tmp_path / f"farm_{date}.tif", image, nodata=0) for date, image in (("20210601", first), ("20220601", second))]


@pytest.fixture
def small_parts(monkeypatch):
    """Segments of 50+ rows, so the 288 patches make one segment per worker."""
    monkeypatch.setattr(spread, "MIN_PART_ROWS", 50)


def build(paths, out, client=None):
    scenes = [Scene.open(p) for p in paths]
    model = load_feature_model(scenes[0].band_names, input_size=32)
    runner = DaskRunner(client, model, OPTIONS) if client is not None else None
    return build_index(out, scenes, model, TilingConfig(16), align=True, options=OPTIONS, runner=runner)[0]


def assert_same_index(found: Index, reference: Index) -> None:
    assert len(found) == len(reference)
    assert list(found.catalog["patch_id"]) == list(reference.catalog["patch_id"])
    assert found.catalog.geometry.geom_equals_exact(reference.catalog.geometry, 1e-9).all()
    np.testing.assert_allclose(np.asarray(found.vectors), np.asarray(reference.vectors), atol=1e-5)
    np.testing.assert_allclose(np.asarray(found.search_vectors), np.asarray(reference.search_vectors), atol=1e-5)
    assert found.manifest.files.keys() == reference.manifest.files.keys()  # the PCA and within-place whitening
    queries = np.asarray(reference.search_vectors[::5], np.float32)
    found_scores, found_ids = found.search(queries, 10)
    scores, ids = reference.search(queries, 10)
    np.testing.assert_allclose(found_scores, scores, atol=1e-5)
    assert (found_ids == ids).mean() > 0.99  # a tie within 1e-5 may swap two neighbours, nothing more
    assert not verify_index(found.path)["damaged"]


def test_workers_write_segments_equal_to_one_process(tmp_path, dates, cluster, small_parts):
    reference = build(dates, tmp_path / "one")
    index = build(dates, tmp_path / "dask", client=cluster)
    assert len(reference.segments) == 1 and len(index.segments) == 2  # one segment per worker
    assert "places" in index.manifest.files  # two aligned dates: the within-place whitening was fitted
    assert_same_index(index, reference)
    assert not (tmp_path / "dask" / ".staging").exists()


def test_large_index_path_searches_each_segment_in_turn(tmp_path, dates, cluster, small_parts, monkeypatch):
    """Past EXACT_LIMIT neighbours for the augmentation come from one helper index per segment, searched in turn
    (never all vectors in one process); each helper of fewer than 100k rows is exact, so the answer is unchanged."""
    monkeypatch.setattr(spread, "EXACT_LIMIT", 100)
    monkeypatch.setattr(writers, "EXACT_LIMIT", 100)  # the one-process build takes its large-index path too
    reference = build(dates, tmp_path / "one")
    index = build(dates, tmp_path / "dask", client=cluster)
    assert len(index.segments) == 2
    assert_same_index(index, reference)
    assert not list((tmp_path / "dask").glob(".staging/helper-*"))


@pytest.mark.parametrize("large", [False, True], ids=["exact", "old-segments-searched"])
def test_append_on_workers_equals_append_in_one_process(tmp_path, dates, cluster, small_parts, monkeypatch, large):
    if large:
        monkeypatch.setattr(spread, "EXACT_LIMIT", 100)
        monkeypatch.setattr(writers, "EXACT_LIMIT", 100)
    for folder in ("one", "dask"):
        build(dates[:1], tmp_path / folder)
    reference = build(dates[1:], tmp_path / "one")
    index = build(dates[1:], tmp_path / "dask", client=cluster)
    assert [s.count for s in index.segments] == [144, 72, 72]  # the old segment untouched, two new ones
    assert_same_index(index, reference)


class KillOnce(distributed.WorkerPlugin):
    """Kill the worker process the first time a task whose key starts with ``prefix`` starts executing (once per
    ``marker`` file, so the restarted worker lives)."""

    def __init__(self, prefix: str, marker: str) -> None:
        self.prefix, self.marker = prefix, marker

    def transition(self, key, start, finish, **kwargs) -> None:
        if finish == "executing" and str(key).startswith(self.prefix) and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)


@pytest.mark.parametrize("stage", ["segment-", "augment-", "faiss-"])
def test_killed_worker_while_writing_segments(tmp_path, dates, cluster, small_parts, stage):
    reference = build(dates, tmp_path / "one")
    marker = tmp_path / "killed"
    cluster.register_plugin(KillOnce(stage, str(marker)), name="kill-once")
    try:
        index = build(dates, tmp_path / "dask", client=cluster)
    finally:
        cluster.unregister_worker_plugin("kill-once")
    assert marker.exists()  # a worker did die mid-build
    assert_same_index(index, reference)
    assert not [p.name for p in (tmp_path / "dask").iterdir() if p.name.startswith(".")]  # no scratch left behind


def test_parts_follow_the_staged_rows_and_the_cluster():
    """One segment per worker, more when a share would pass MAX_PART_ROWS, never past MAX_SEGMENTS; each part a
    contiguous run of the staged rows in the one-process order (a scene may span two)."""
    from types import SimpleNamespace

    two_workers = SimpleNamespace(scheduler_info=lambda: {"workers": {"a": {}, "b": {}}})
    assert spread.part_count(two_workers, 600_000, 0, 16) == 2
    assert spread.part_count(two_workers, 10_000_000, 0, 16) == 10  # 1M rows a worker at most
    assert spread.part_count(two_workers, 10_000_000, 12, 16) == 4  # room for 4 more segments
    assert spread.part_count(two_workers, 30_000, 0, 16) == 1  # two parts would be under MIN_PART_ROWS
    staged = [SimpleNamespace(store=SimpleNamespace(vectors=np.zeros((n, 2))), folder=f"s{i}", record={"scene_id": f"s{i}", "date": "2020-01-01"})
              for i, n in enumerate((5, 7, 3))]  # fmt: skip
    parts = spread.plan_parts(staged, 2, 4, augmented=True)
    assert [p.runs for p in parts] == [(("s0", "2020-01-01", 0, 5), ("s1", "2020-01-01", 0, 3)), (("s1", "2020-01-01", 3, 7), ("s2", "2020-01-01", 0, 3))]
    assert [(p.segment_id, p.first, p.count) for p in parts] == [(4, 0, 8), (5, 8, 7)]
    assert parts[1].names["augmented"] == "segment-000005-augmented.npy"

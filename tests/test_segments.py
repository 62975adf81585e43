"""Segmented indexes: appends that write only what they add, search across segments equal to one index,
filters that still return k hits, compaction, and kill -9 at the worst moment of each."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import faiss
import numpy as np
import pytest
from click.testing import CliRunner

from rscbir.index import build as index_build
from rscbir.index import search as index_search
from rscbir.cli import cli
from rscbir.index import Index, compact_index
from test_index import scenes

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--patch-size", "32", "--input-size", "32", "--augment", "0"]  # 16 patches a scene; no augmentation, so
# every row's vector is its own and one index built at once is the reference for any sequence of appends


def index_cli(*args):
    result = CliRunner().invoke(cli, ["-q", "index", "build", *map(str, args), *SMALL])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def four_scenes(tmp_path):
    return scenes(tmp_path, 4)


def appended(tmp_path, paths, name="seg", *extra):
    out = tmp_path / name
    for path in paths:
        index_cli(path, "-o", out, *extra)
    return out


def same_answers(first: Index, second: Index, queries: np.ndarray, k: int = 10, allowed=None):
    s1, i1 = first.search(queries, k, allowed)
    s2, i2 = second.search(queries, k, allowed)
    ids1, ids2 = first.catalog["patch_id"].to_numpy()[i1], second.catalog["patch_id"].to_numpy()[i2]
    np.testing.assert_allclose(s1, s2, atol=1e-5)
    assert (ids1 == ids2).mean() > 0.99  # the same hits in the same order (ties aside)


def test_three_appends_answer_as_one_index_built_at_once(tmp_path, four_scenes):
    whole = tmp_path / "whole"
    index_cli(*four_scenes, "-o", whole)
    parts = appended(tmp_path, four_scenes)
    one, many = Index.open(whole), Index.open(parts)
    assert len(one.segments) == 1 and len(many.segments) == 4 and len(one) == len(many) == 64
    assert list(one.catalog["patch_id"]) == list(many.catalog["patch_id"])
    same_answers(one, many, np.asarray(one.vectors[::3], np.float32))
    row = int(np.flatnonzero(many.catalog["scene_id"] == "s2_20200103")[4])  # a patch in the third segment
    np.testing.assert_array_equal(many.vectors[row], one.vectors[row])


def test_filters_return_k_hits_when_k_exist(tmp_path, four_scenes, monkeypatch):
    many = Index.open(appended(tmp_path, four_scenes, "seg", "--index-type", "HNSW32"))
    rng = np.random.default_rng(0)
    allowed = np.zeros(len(many), bool)
    allowed[rng.choice(len(many), 12, replace=False)] = True
    queries = np.asarray(many.vectors[:5], np.float32)
    for limit in (0, 10_000):  # the FAISS ID selector inside HNSW, and exact scoring of few allowed rows
        monkeypatch.setattr(index_search, "EXACT_FILTER_LIMIT", limit)
        scores, ids = many.search(queries, 8, allowed)
        assert (ids >= 0).all() and allowed[ids].all()
        exact = queries @ np.asarray(many.vectors, np.float32)[allowed].T
        np.testing.assert_allclose(np.sort(scores, axis=1), np.sort(np.sort(exact, axis=1)[:, -8:], axis=1), atol=1e-4)
    scores, ids = many.search(queries, 50, allowed)  # more than are allowed: all 12, then -1
    assert (ids[:, :12] >= 0).all() and (ids[:, 12:] == -1).all()


def test_bbox_query_returns_k_hits_inside_the_box(tmp_path, four_scenes):
    from rscbir.query import Filters, QueryExpansion, query_patch

    many = Index.open(appended(tmp_path, four_scenes))
    west, south, east, north = many.catalog.total_bounds
    box = (west, south, (west + east) / 2, (south + north) / 2)
    inside = many.catalog.geometry.intersects(__import__("shapely").box(*box)).sum()
    assert inside >= 10
    result = query_patch(many, many.catalog["patch_id"].iloc[40], 10, Filters(bbox=box), QueryExpansion(0), places=False)
    assert len(result.hits) == 10 and result.hits.geometry.intersects(__import__("shapely").box(*box)).all()


def test_lossy_codes_are_reranked_on_the_stored_vectors(tmp_path, four_scenes):
    """IVF-SQ8 segments (the large-index default) rank their candidates again on the stored vectors, as FAISS's
    IndexRefine does: the best 4 k by code score over all segments are re-scored exactly, so the scores returned are
    exact inner products, and the top 10 match an exact search's (here from a quantizer trained on 16 vectors)."""
    many = Index.open(appended(tmp_path, four_scenes, "sq", "--index-type", "IVF4,SQ8"))
    assert {s.record.index_type for s in many.segments} == {"IVF4,SQ8"}
    vectors = np.asarray(many.vectors, np.float32)
    queries = vectors[::5]
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    expected_scores, expected_ids = exact.search(queries, 10)
    scores, ids = many.search(queries, 10)
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries, vectors[ids]), atol=1e-5)  # exact scores
    np.testing.assert_allclose(scores[:, 0], expected_scores[:, 0], atol=1e-5)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, expected_ids)])
    assert overlap >= 0.9, overlap
    raw_scores, _ = many.segments[0].faiss_index.search(queries, 10)
    assert np.abs(raw_scores - expected_scores).max() > 1e-4  # without the re-ranking, the codes' scores are off


def test_ivf_segments_share_one_trained_quantizer(tmp_path, four_scenes):
    many = Index.open(appended(tmp_path, four_scenes, "ivf", "--index-type", "IVF4,Flat"))
    trained = many.manifest.files["trained"]
    assert many.manifest.trained_type == "IVF4,Flat" and len(many.segments) == 4
    assert len(list(many.path.glob("trained-*.faiss"))) == 1  # trained once, on the first segment
    single = faiss.read_index(str(many.path / trained))  # one index from the same training over every vector
    single.add(np.asarray(many.vectors, np.float32))
    faiss.extract_index_ivf(single).nprobe = faiss.extract_index_ivf(many.segments[0].faiss_index).nprobe
    queries = np.asarray(many.vectors[::4], np.float32)
    expected_scores, expected_ids = single.search(queries, 10)
    scores, ids = many.search(queries, 10)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
    assert (ids == expected_ids).mean() > 0.99


def test_compaction_keeps_every_id_and_answer(tmp_path, four_scenes):
    out = appended(tmp_path, four_scenes)
    before = Index.open(out)
    queries = np.asarray(before.vectors[::3], np.float32)
    ids_before = list(before.catalog["patch_id"])  # read now: compaction removes the files it was read from
    result = CliRunner().invoke(cli, ["index", "compact", str(out)])
    assert result.exit_code == 0 and "4 segments merged into one" in result.output
    after = Index.open(out)
    assert len(after.segments) == 1 and list(after.catalog["patch_id"]) == ids_before
    same_answers(before, after, queries)
    assert sorted(p.name for p in out.iterdir()) == ["index.json", *sorted(after.segments[0].record.files.values())]
    assert compact_index(out)[1] == 0  # one segment: nothing to do


def test_appends_past_the_limit_compact(tmp_path, four_scenes, monkeypatch):
    monkeypatch.setattr(index_build, "MAX_SEGMENTS", 2)
    out = appended(tmp_path, four_scenes[:2])
    result = CliRunner().invoke(cli, ["index", "build", str(four_scenes[2]), "-o", str(out), *SMALL])
    assert result.exit_code == 0 and "3 segments compacted into one" in result.output
    assert len(Index.open(out).segments) == 1 and len(Index.open(out)) == 48


def test_the_old_single_command_spelling_still_works(tmp_path, four_scenes):
    """`rscbir index SCENE -o DIR`, `index DIR --remove ID` and `index DIR --compact` (before `build|remove|compact`)
    do what they did, each with a note naming the new spelling."""
    out = tmp_path / "old"
    first = CliRunner().invoke(cli, ["index", str(four_scenes[0]), "-o", str(out), *SMALL])
    assert first.exit_code == 0 and "is now `rscbir index build ...`" in first.stderr
    second = CliRunner().invoke(cli, ["index", str(four_scenes[1]), "-o", str(out), *SMALL])
    assert second.exit_code == 0 and len(Index.open(out).segments) == 2
    merged = CliRunner().invoke(cli, ["index", str(out), "--compact"])
    assert merged.exit_code == 0 and "2 segments merged into one" in merged.output and "rscbir index compact" in merged.stderr
    scene_id = Index.open(out).manifest.scenes[0].scene_id
    removed = CliRunner().invoke(cli, ["index", "--remove", scene_id, "-o", str(out)])
    assert removed.exit_code == 0 and "rscbir index remove" in removed.stderr
    assert [s.scene_id for s in Index.open(out).manifest.scenes] == [Index.open(out).manifest.scenes[0].scene_id] != [scene_id]


KILL_BEFORE_COMMIT = """
import os, signal, sys
from rscbir.index.commit import Generation
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # every new file is written and flushed; the manifest is not yet swapped
Generation.commit = die
from rscbir.cli import cli
cli(sys.argv[1:])
"""


@pytest.mark.parametrize("operation", ["append", "compact"])
def test_kill_minus_9_before_the_manifest_swap(tmp_path, four_scenes, operation):
    out = appended(tmp_path, four_scenes[:3])
    before = Index.open(out)
    files_before = sorted(p.name for p in out.iterdir())
    args = ["build", str(four_scenes[3]), "-o", str(out), *SMALL] if operation == "append" else ["compact", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(KILL_BEFORE_COMMIT), "-q", "index", *args], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    orphans = sorted(set(p.name for p in out.iterdir()) - set(files_before) - {".staging"})
    assert orphans and all(name.startswith("segment-000004-") for name in orphans)  # written, never named by a manifest
    survivor = Index.open(out)  # the previous index, whole
    assert len(survivor) == len(before) and len(survivor.segments) == 3
    rerun = CliRunner().invoke(cli, ["-q", "index", *args])
    assert rerun.exit_code == 0, rerun.output
    final = Index.open(out)
    assert len(final) == (64 if operation == "append" else 48) and final.catalog["patch_id"].is_unique
    named = {"index.json", *final.manifest.data_files()}
    assert set(p.name for p in out.iterdir()) == named  # the orphans of the killed run are gone


def test_a_corrupt_segment_is_named(tmp_path, four_scenes):
    out = appended(tmp_path, four_scenes[:3])
    victim = out / Index.open(out).segments[1].record.files["vectors"]
    data = bytearray(victim.read_bytes())
    data[-64:] = b"\xff" * 64
    victim.write_bytes(bytes(data))
    result = CliRunner().invoke(cli, ["check", str(out)])
    assert result.exit_code == 1 and victim.name in result.output
    victim.write_bytes(bytes(data[:-128]))
    result = CliRunner().invoke(cli, ["query", str(out), "--patch-id", "s0_20200101:0:0"])
    assert result.exit_code == 2 and victim.name in result.output


def test_embeddings_export_to_geoparquet(tmp_path, four_scenes):
    """`rscbir export` writes every patch of a segmented index as GeoParquet 1.1: the same ids, footprints, dates
    and vectors as the index, the vector as a fixed-size float32 list, the model in the metadata."""
    import json

    import geopandas as gpd
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "seg"
    for path in four_scenes[:3]:
        assert CliRunner().invoke(cli, ["-q", "index", "build", str(path), "-o", str(out), *SMALL[:4], "--augment", "2"]).exit_code == 0
    index = Index.open(out)
    assert len(index.segments) == 3
    target = tmp_path / "embeddings.parquet"
    result = CliRunner().invoke(cli, ["export", str(out), "-o", str(target)])
    assert result.exit_code == 0, result.output
    table = pq.read_table(target)
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), index.manifest.dim)
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"
    provenance = json.loads(table.schema.metadata[b"rscbir"])
    assert provenance["model"] == index.manifest.model and provenance["dim"] == index.manifest.dim
    frame = gpd.read_parquet(target)
    catalog = index.catalog
    assert frame.crs.to_epsg() == 4326 and list(frame["patch_id"]) == list(catalog["patch_id"])
    assert frame.geometry.geom_equals_exact(catalog.geometry, 1e-12).all()
    assert [str(t.date()) for t in frame["datetime"]] == list(catalog["date"])
    vectors = np.stack(table["embedding"].to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(vectors, np.asarray(index.vectors, np.float32))
    searched = tmp_path / "searched.parquet"
    assert CliRunner().invoke(cli, ["export", str(out), "-o", str(searched), "--search-vectors", "--column", "v"]).exit_code == 0
    np.testing.assert_array_equal(np.stack(pq.read_table(searched)["v"].to_numpy(zero_copy_only=False)),
                                  np.asarray(index.search_vectors, np.float32))  # fmt: skip
    assert not np.array_equal(vectors, np.asarray(index.search_vectors, np.float32))  # augmentation changed them

"""The index folder: build, append, atomic writes, resume after kill -9, exact vs approximate search."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import blob_image, write_raster
from rscbir.cli import cli
from rscbir.errors import IndexFileError
from rscbir.index import Index, build_faiss

ROOT = Path(__file__).resolve().parents[1]


def scenes(tmp_path, n=3, size=128):
    paths = []
    for i in range(n):
        image = blob_image(size, size, centre=(30 + 20 * i, 40 + 10 * i), sigma=6, seed=i)
        paths.append(write_raster(tmp_path / f"s{i}_2020010{i + 1}.tif", image, nodata=0))
    return paths


def index_cli(*args):
    return CliRunner().invoke(cli, ["-q", "index", "build", *map(str, args), "--patch-size", "32", "--input-size", "32"])


def folder_digest(path: Path) -> dict:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(path.iterdir()) if p.is_file()}


PARTS = ["augmented.npy", "catalog.parquet", "cells.npy", "faiss.index", "lookup.npy", "vectors.npy"]


def test_build_append_and_skip(tmp_path):
    a, b, c = scenes(tmp_path)
    out = tmp_path / "idx"
    result = index_cli(a, b, "-o", out)
    assert result.exit_code == 0, result.output
    first = Index.open(out)
    assert len(first) == 32 and first.manifest.generation == 1 and first.manifest.index_type == "Flat"
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, hashlib.md5(p.read_bytes()).hexdigest()) for p in out.glob("segment-*")}
    result = index_cli(b, c, "-o", out)
    assert result.exit_code == 0, result.output
    assert "1 already indexed (s1_20200102)" in result.output
    second = Index.open(out)
    assert len(second) == 48 and second.manifest.generation == 2
    stems = ["segment-000001", "segment-000002"]
    assert sorted(p.name for p in out.iterdir()) == ["index.json"] + [f"{s}-{part}" for s in stems for part in PARTS]
    # an append writes one new segment and leaves the old one's files as they were: same inode, mtime and bytes
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, hashlib.md5(p.read_bytes()).hexdigest())
            for p in out.glob("segment-000001-*")} == before  # fmt: skip
    # an append augments only the new patches: the old rows' search vectors are kept as they were
    np.testing.assert_array_equal(np.asarray(second.augmented[:32]), np.asarray(first.augmented[:32]))
    np.testing.assert_array_equal(np.asarray(second.vectors[:32]), np.asarray(first.vectors[:32]))
    assert list(second.catalog["vector"]) == list(range(48))


def test_model_or_tiling_mismatch_refused_index_untouched(tmp_path):
    a, b, _ = scenes(tmp_path)
    out = tmp_path / "idx"
    assert index_cli(a, "-o", out).exit_code == 0
    before = folder_digest(out)
    result = index_cli(b, "-o", out, "--pooling", "gem")
    assert result.exit_code == 2 and "built with another model" in result.output and "pooling: grid -> gem" in result.output
    result = CliRunner().invoke(cli, ["index", "build", str(b), "-o", str(out), "--patch-size", "16", "--input-size", "32"])
    assert result.exit_code == 2 and "another tiling" in result.output
    assert folder_digest(out) == before


def test_corrupt_and_missing_index(tmp_path):
    (a,) = scenes(tmp_path, 1)
    out = tmp_path / "idx"
    assert index_cli(a, "-o", out).exit_code == 0
    with pytest.raises(IndexFileError, match="no index here"):
        Index.open(tmp_path / "nowhere")
    faiss_file = next(out.glob("segment-*-faiss.index"))
    faiss_file.write_bytes(b"garbage")
    with pytest.raises(IndexFileError, match="corrupt") as caught:
        Index.open(out)
    assert faiss_file.name in str(caught.value)  # the error names the damaged segment file
    result = CliRunner().invoke(cli, ["query", str(out), "--patch-id", "s0_20200101:0:0"])
    assert result.exit_code == 2 and "corrupt" in result.output and "Traceback" not in result.output
    assert faiss_file.read_bytes() == b"garbage"  # a query never writes


def test_failure_while_writing_keeps_previous_generation(tmp_path, monkeypatch):
    a, b, _ = scenes(tmp_path)
    out = tmp_path / "idx"
    assert index_cli(a, "-o", out).exit_code == 0
    before = folder_digest(out)
    import faiss

    monkeypatch.setattr(faiss, "write_index", lambda *args: (_ for _ in ()).throw(OSError("disk full")))
    result = index_cli(b, "-o", out)
    assert result.exit_code != 0
    assert {k: v for k, v in folder_digest(out).items()} == before
    assert len(Index.open(out)) == 16


def test_kill_minus_9_leaves_readable_index_and_rerun_resumes(tmp_path):
    """A real SIGKILL once the first new scene is staged: the previous generation stays readable and the
    re-run reuses the staged scene. The last scene is large (4,096 patches, seconds of work) so the kill
    always lands while the run is still going."""
    a, b = scenes(tmp_path, 2, size=256)
    big = write_raster(tmp_path / "s2_20200103.tif", blob_image(2048, 2048, centre=(900, 700), sigma=40, seed=2), nodata=0)
    out = tmp_path / "idx"
    assert index_cli(a, "-o", out).exit_code == 0
    command = [sys.executable, "-m", "rscbir", "-q", "index", "build", str(b), str(big), "-o", str(out),
               "--patch-size", "32", "--input-size", "32", "--runtime", "torch"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    staged = None
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        done = [p for p in (out / ".staging").glob("s1_*") if (p / "model.json").exists()] if (out / ".staging").exists() else []
        if done:
            staged = done[0]
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    process.wait()
    assert staged is not None, f"the run ended (code {process.returncode}) before its first scene was staged"
    assert process.returncode == -signal.SIGKILL
    survivor = Index.open(out)  # the previous generation, complete
    assert set(survivor.catalog["scene_id"]) == {"s0_20200101"} and len(survivor) == 64
    rerun = subprocess.run(command[:3] + ["index", "build", str(b), str(big), "-o", str(out), "--patch-size", "32", "--input-size", "32"],
                           env=env, capture_output=True, text=True)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert "1 resumed from staged embeddings" in rerun.stderr  # messages go to stderr
    final = Index.open(out)
    assert len(final) == 64 + 64 + 4096 and final.catalog["patch_id"].is_unique
    assert not (out / ".staging").exists()


@pytest.mark.parametrize("factory", ["HNSW32", "IVF32,Flat"])
def test_approximate_search_agrees_with_exact(factory):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 64))
    vectors = centres[rng.integers(0, 40, 4000)] + 0.6 * rng.normal(size=(4000, 64))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    queries = vectors[rng.choice(4000, 200, replace=False)] + 0.05 * rng.normal(size=(200, 64)).astype(np.float32)
    _, exact = build_faiss(vectors, "Flat").search(queries, 10)
    _, approx = build_faiss(vectors, factory).search(queries, 10)
    recall = np.mean([len(set(e) & set(a)) / 10 for e, a in zip(exact, approx)])
    assert recall >= 0.95


def test_ivf_needs_enough_vectors():
    vectors = np.eye(8, dtype=np.float32)
    with pytest.raises(IndexFileError, match="needs at least"):
        build_faiss(vectors, "IVF32,Flat")
    with pytest.raises(IndexFileError, match="cannot build index type"):
        build_faiss(vectors, "NotAnIndex")


def test_info_describes_an_index_from_its_manifest(tmp_path):
    a, b, _ = scenes(tmp_path)
    out = tmp_path / "idx"
    assert index_cli(a, b, "-o", out).exit_code == 0
    text = CliRunner().invoke(cli, ["info", str(out)])
    assert text.exit_code == 0, text.output
    assert "32 patches from 2 scene(s), dates 2020-01-01, 2020-01-02" in text.output
    assert "FAISS Flat" in text.output and "scene      s1_20200102 (2020-01-02, date from name): 16 patches" in text.output
    doc = json.loads(CliRunner().invoke(cli, ["info", str(out), "--json"]).output)
    assert doc["patches"] == 32 and doc["model"]["stages"] == 4 and doc["vectors"]["augment"] == 5
    assert doc["bytes_on_disk"] == sum(p.stat().st_size for p in out.iterdir() if p.is_file())


def test_within_place_whitening_divides_out_what_each_date_adds():
    """Each place seen on two dates, the second date adding its own amount of one acquisition direction (haze, light:
    not a shift every place shares, so centring alone cannot take it off). Before whitening the other date's nearest
    patch is rarely the same place; after it, nearly always."""
    from rscbir.defaults import PLACE_SHRINK
    from rscbir.models.whitening import PlaceWhitening
    from rscbir.rerank import normalise

    rng = np.random.default_rng(0)
    places, dim = 300, 32
    ground = rng.normal(size=(places, dim))
    acquisition = np.zeros(dim)
    acquisition[:3] = 1.0
    first = normalise(ground + 0.1 * rng.normal(size=(places, dim)))
    second = normalise(ground + 0.1 * rng.normal(size=(places, dim)) + rng.normal(0, 12, size=(places, 1)) * acquisition)
    mean = (first + second) / 2
    whitening = PlaceWhitening.fit(np.concatenate([first - mean, second - mean]), PLACE_SHRINK)

    def same_place_first(a, b):
        return float(np.mean(np.argmax(a @ b.T, axis=1) == np.arange(places)))

    assert same_place_first(first, second) < 0.6
    assert same_place_first(whitening.transform(first), whitening.transform(second)) > 0.95


def test_an_aligned_index_of_two_dates_keeps_its_whitening_for_appends(tmp_path):
    """Created from 2 dates on one grid, the index stores the within-place whitening (and says so); an append keeps it
    (every segment comparable); one date, --no-centre-scenes or no common grid: none."""
    a, b, c = scenes(tmp_path, size=384)  # 144 patches each: enough for a 128-d PCA and its whitening
    out = tmp_path / "idx"
    assert index_cli(a, b, "--align", "-o", out).exit_code == 0
    places = Index.open(out).places
    assert places is not None and "within-place whitening" in CliRunner().invoke(cli, ["info", str(out)]).output
    assert index_cli(c, "-o", out).exit_code == 0
    np.testing.assert_array_equal(Index.open(out).places.matrix, places.matrix)
    for args, name in (((a,), "one"), ((a, b, "--no-centre-scenes"), "plain"), ((a, b), "unaligned")):
        extra = ("--align",) if name != "unaligned" else ()
        assert index_cli(*args, *extra, "-o", tmp_path / name).exit_code == 0
        assert Index.open(tmp_path / name).places is None, name

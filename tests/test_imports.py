"""Embeddings in: `index build --from-embeddings` on a file `rscbir export` wrote (the same answers as the index it came
from) and on vectors another tool made (points, plain lists); bad files get one line and leave nothing."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from click.testing import CliRunner

from rscbir.cli import cli
from rscbir.index import Index
from rscbir.query import Feedback, query_point


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.realdata
def test_export_then_import_answers_as_the_index_did(naip_index, tmp_path):
    exported, imported = tmp_path / "e.parquet", tmp_path / "imported"
    assert run("export", naip_index, "-o", exported).exit_code == 0
    result = run("index", "build", "--from-embeddings", exported, "-o", imported)
    assert result.exit_code == 0, result.output
    for args in (["--lonlat", "-99.1329", "47.0294", "-k", "10"], ["--patch-id", "m_4709963_se_14_1_20090818:3:9", "-k", "5"]):
        answers = [json.loads(run("query", index, *args).stdout)["features"] for index in (naip_index, imported)]
        assert [(f["properties"]["patch_id"], f["properties"]["score"]) for f in answers[0]] == \
               [(f["properties"]["patch_id"], f["properties"]["score"]) for f in answers[1]]  # fmt: skip
    changes = [run("change", "--index", index, "--dates", "20090818", "20200831", "--method", "cosine", "-o", tmp_path / f"c{n}.geojson")
               for n, index in enumerate((naip_index, imported))]  # fmt: skip
    assert all(c.exit_code == 0 for c in changes)
    assert (tmp_path / "c0.geojson").read_text() == (tmp_path / "c1.geojson").read_text()
    sheet = run("query", imported, "--lonlat", "-99.1329", "47.0294", "-k", "3", "-o", tmp_path / "q.geojson", "--preview", tmp_path / "q.png")
    assert sheet.exit_code == 0 and (tmp_path / "q.png").stat().st_size > 10_000  # the imagery, from the recorded scenes
    chip = run("query", imported, "--image", tmp_path / "q.png")
    assert chip.exit_code == 2 and "without the model or projection that made them" in chip.output


def _foreign(path, n=120, dim=48, ragged=False, extra_list=False):
    """Another tool's embeddings: points on two fields a few km apart, each field's vectors around its own direction."""
    rng = np.random.default_rng(0)
    field = np.arange(n) % 2
    centres = rng.normal(size=(2, dim))
    vectors = (centres[field] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)
    lon = np.where(field == 0, 10.00, 10.05) + (np.arange(n) // 2 % 6) * 0.001
    lat = 50.0 + (np.arange(n) // 12) * 0.001
    values = [list(v) for v in vectors]
    if ragged:
        values[7] = values[7][:-1]
    table = {"scene_id": ["tile_a"] * n, "datetime": ["2021-06-01T10:00:00Z"] * n, "emb": values}
    if extra_list:
        table["other"] = [[1.0, 2.0]] * n
    frame = gpd.GeoDataFrame(table, geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326")
    frame.to_parquet(path)
    return field


def test_another_tools_points_are_searched_and_learn_from_marks(tmp_path):
    source, out = tmp_path / "theirs.parquet", tmp_path / "idx"
    field = _foreign(source)
    result = run("index", "build", "--from-embeddings", source, "-o", out, "--augment", "0")
    assert result.exit_code == 0, result.output
    index = Index.open(out)
    assert len(index) == 120 and index.manifest.dim == 48 and index.manifest.scenes[0].date == "2021-06-01"
    assert index.catalog.geometry.iloc[0].geom_type == "Polygon"  # points became footprints a click can find
    found = query_point(index, 10.0, 50.0, k=20)  # on field 0
    rows = [int(p.split(":")[1]) for p in found.hits["patch_id"]]
    assert np.mean(field[rows] == 0) >= 0.9
    wrong = found.hits["patch_id"].iloc[0]
    again = query_point(index, 10.0, 50.0, k=20, feedback=Feedback(positives=(found.hits["patch_id"].iloc[1],), negatives=(wrong,)))
    assert wrong not in set(again.hits["patch_id"])
    preview = run("query", out, "--lonlat", "10.0", "50.0", "-o", tmp_path / "h.geojson", "--preview", tmp_path / "h.png")
    assert preview.exit_code != 0 and "imported without imagery" in preview.output and "Traceback" not in preview.output


@pytest.mark.parametrize(
    "kind, words",
    [("ragged", "ragged vectors in 'emb': row 7 has 47 values, row 0 has 48"),
     ("no vectors", "no list column; name the vector column with --vector-column"),
     ("two lists", "list columns emb, other; name the vector column")],
)
def test_a_file_without_usable_vectors_is_one_line_and_writes_nothing(tmp_path, kind, words):
    source = tmp_path / "bad.parquet"
    if kind == "no vectors":
        gpd.GeoDataFrame({"scene_id": ["a"]}, geometry=[shapely.Point(0, 0)], crs="EPSG:4326").to_parquet(source)
    else:
        _foreign(source, ragged=kind == "ragged", extra_list=kind == "two lists")
    result = run("index", "build", "--from-embeddings", source, "-o", tmp_path / "idx")
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "idx").exists()
    named = run("index", "build", "--from-embeddings", source, "--vector-column", "nope", "-o", tmp_path / "idx")
    assert named.exit_code == 2 and "no column 'nope'" in named.output and not (tmp_path / "idx").exists()
    mixed = run("index", "build", "x.tif", "--from-embeddings", source, "-o", tmp_path / "idx")
    assert mixed.exit_code == 2 and "cannot be used with --from-embeddings" in mixed.output

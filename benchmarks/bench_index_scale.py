"""A segmented index at scale: build, append 1 %, open, query with catalog lookup, bbox-filtered query, recall.

Vectors: the real EfficientNet-Lite0 embeddings of all NAIP years (as bench_query.py, PCA to 128-d)
and *synthetic fill*: real vectors plus Gaussian noise at the median nearest-neighbour distance.
Catalog rows are synthetic too, with the schema and sizes of real ones (patch id, scene, date,
row/col, offsets, transform, CRS, bounds, nodata fraction, a lon/lat polygon): scenes of 10,000
patches (100 x 100 at 320 m) laid side by side, ten dates. The index is written by rscbir's own
segment writer (`rscbir.index.build.write_generation`), so files, manifest, FAISS types and search are
the real ones; only the CNN pass is skipped.

    python benchmarks/bench_index_scale.py [--sizes 1000000] [--augment 5] [--segments 10] [--fill jitter|gaussian]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_query import WORK, jitter, real_corpus  # noqa: E402
from record import record  # noqa: E402

SCENE = 100  # patches per side of a synthetic scene
STEP = 0.0029  # degrees: about 320 m at 47 N


def synthetic_scene(number: int, vectors: np.ndarray, date: str):
    """A staged scene as rscbir.index expects one (StagedScene): a manifest record, and a store of vectors + catalog rows."""
    from rscbir.index.writers import StagedScene

    import geopandas as gpd
    import shapely

    n = len(vectors)
    rows, cols = np.divmod(np.arange(n), SCENE)
    west, north = -100.0 + (number % 50) * SCENE * STEP, 47.0 + (number // 50) * SCENE * STEP
    minx, maxy = west + cols * STEP, north - rows * STEP
    scene_id = f"synthetic_{number:05d}_{date.replace('-', '')}"
    catalog = gpd.GeoDataFrame(
        {
            "patch_id": [f"{scene_id}:{r}:{c}" for r, c in zip(rows, cols)],
            "scene_id": scene_id,
            "date": date,
            "row": rows,
            "col": cols,
            "col_off": cols * 64,
            "row_off": rows * 64,
            "width": 64,
            "height": 64,
            "transform": [np.array([5.0, 0.0, 485900.0 + c * 320, 0.0, -5.0, 5209242.0 - r * 320]) for r, c in zip(rows, cols)],
            "crs": "EPSG:26914",
            "minx": 485900.0 + cols * 320.0,
            "miny": 5209242.0 - (rows + 1) * 320.0,
            "maxx": 485900.0 + (cols + 1) * 320.0,
            "maxy": 5209242.0 - rows * 320.0,
            "nodata_fraction": 0.0,
        },
        geometry=shapely.box(minx, maxy - STEP, minx + STEP, maxy),
        crs="EPSG:4326",
    )
    record = {"scene_id": scene_id, "location": f"synthetic/{scene_id}.tif", "date": date, "bands": ["R", "G", "B"], "sources": [],
              "scaling": {"mode": "divide", "divisor": 255.0}, "band_stats": None, "content_hash": scene_id, "patches": n}  # fmt: skip
    return StagedScene(record, SimpleNamespace(vectors=vectors, catalog=catalog, meta={}), None)


def scenes_for(vectors: np.ndarray, first: int) -> list:
    per = SCENE * SCENE
    return [synthetic_scene(first + i, vectors[start : start + per], f"20{10 + (first + i) % 10}-06-01")
            for i, start in enumerate(range(0, len(vectors), per))]  # fmt: skip


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def fill(real: np.ndarray, n: int, nn_distance: float, rng, kind: str) -> np.ndarray:
    """``n`` synthetic vectors: jittered copies of real ones, or (``gaussian``) draws from a Gaussian with the real
    vectors' mean and covariance, a structureless worst case for any approximate search."""
    if kind == "gaussian":
        out = rng.multivariate_normal(real.mean(axis=0), np.cov(real.T), n).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)
    return jitter(real, n, nn_distance, rng)


def exact_top(vectors, queries: np.ndarray, k: int = 10, chunk: int = 1 << 20) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` (scores, ids) of ``queries`` over ``vectors`` read a chunk at a time (no copy of all)."""
    best_scores = np.full((len(queries), k), -np.inf, np.float32)
    best_ids = np.full((len(queries), k), -1, np.int64)
    for start in range(0, len(vectors), chunk):
        block = np.asarray(vectors[start : start + chunk], np.float32)
        sims = queries @ block.T
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        scores = np.concatenate([best_scores, np.take_along_axis(sims, top, 1)], axis=1)
        ids = np.concatenate([best_ids, top + start], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        best_scores, best_ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
    return best_scores, best_ids


def measure(folder: Path, queries: int, kind: str) -> dict:
    """Open + one query (time, peak memory), then query timings of the first pass (each IVF list mapped for the
    first time) and of a second, warm pass, bbox queries, and recall@10 against exact search."""
    start = time.perf_counter()
    from rscbir.index import Index
    from rscbir.query import Filters, QueryExpansion, query_patch

    index = Index.open(folder)
    open_s = time.perf_counter() - start
    query_patch(index, index.patches([12345])["patch_id"].iloc[0], 10, Filters(), QueryExpansion(0))
    peak = {k: int(v.split()[0]) / 1024 for k, v in (line.split(":", 1) for line in open("/proc/self/status")) if k in ("VmHWM", "RssAnon")}
    rng = np.random.default_rng(1)
    rows = index.patches(rng.integers(0, len(index), queries))
    ids, bounds = rows["patch_id"].to_numpy(), rows.geometry.bounds.to_numpy()
    passes = []
    for _ in range(2):
        times = []
        for patch_id in ids:
            start = time.perf_counter()
            query_patch(index, patch_id, 10, Filters(), QueryExpansion(0))
            times.append(time.perf_counter() - start)
        passes.append(times)
    boxed, hits_ok = [], 0
    for patch_id, (w, s, e, n) in zip(ids, bounds):
        box = (w - 3 * STEP, s - 3 * STEP, e + 3 * STEP, n + 3 * STEP)  # about 7 x 7 patches of one date, some more
        start = time.perf_counter()
        result = query_patch(index, patch_id, 10, Filters(bbox=box), QueryExpansion(0))
        boxed.append(time.perf_counter() - start)
        hits_ok += len(result.hits) == 10
    real, nn_distance = real_corpus(128)
    asked = fill(real, queries, nn_distance, rng, kind)
    truth_scores, truth = exact_top(index.search_vectors, asked)
    found_scores, found = index.search(asked, 10)
    recall = float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found)]))
    # synthetic fill puts ~170 near-copies around each real vector, so the true top 10 are often ties:
    # also count a hit as right when it scores at least the true 10th (a tie the exact search broke otherwise)
    score_recall = float(np.mean(found_scores >= truth_scores[:, -1:] - 1e-6))
    first, warm = passes
    return {
        "open_s": open_s, "peak_rss_mib": peak["VmHWM"], "peak_private_mib": peak["RssAnon"],
        "query_p50_ms": 1000 * np.percentile(warm, 50), "query_p95_ms": 1000 * np.percentile(warm, 95),
        "first_p50_ms": 1000 * np.percentile(first, 50), "first_p95_ms": 1000 * np.percentile(first, 95),
        "bbox_p50_ms": 1000 * np.percentile(boxed, 50), "bbox_p95_ms": 1000 * np.percentile(boxed, 95),
        "bbox_k_hits": hits_ok / len(ids), "recall_at_10": recall, "score_recall_at_10": score_recall,
    }  # fmt: skip


def scale_title(args) -> str:
    """The results.md heading of one configuration (a rerun of it replaces its section)."""
    sizes = ", ".join(f"{s // 1_000_000}M" if s % 1_000_000 == 0 else f"{s:,}" for s in args.sizes)
    return f"Index at scale: {sizes} patches, {args.segments} append(s), augment {args.augment}, {args.fill} fill"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--augment", type=int, default=5)
    parser.add_argument("--segments", type=int, default=1, help="build as this many appends of equal size (one per date)")
    parser.add_argument("--fill", choices=["jitter", "gaussian"], default="jitter")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep the built index in benchmarks/_work (to look into it)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the fresh process that measures a built index
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.queries, args.fill)))
        return
    from rscbir.embed import EmbedOptions
    from rscbir.index import Index, index_settings, write_generation
    from rscbir.models.load import load_feature_model
    from rscbir.tiling import TilingConfig

    rng = np.random.default_rng(0)
    real, nn_distance = real_corpus(128)
    config = load_feature_model(["R", "G", "B"]).config
    options = EmbedOptions(dim=None, dtype="float32")
    settings = index_settings(config, TilingConfig("320m"), options, augment=args.augment)
    results = []
    for size in args.sizes:
        folder = WORK / f"scale_{size}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        per, existing, build_s, scene = size // args.segments, None, 0.0, 0
        for part in range(args.segments):  # one append per date, the vectors generated a segment at a time
            count = per if part < args.segments - 1 else size - per * part
            head = real[:count] if part == 0 and args.fill == "jitter" else real[:0]
            vectors = np.concatenate([head, fill(real, count - len(head), nn_distance, rng, args.fill)]).astype(np.float32)
            stores = scenes_for(vectors, scene)
            scene += len(stores)
            start = time.perf_counter()
            existing = write_generation(folder, existing, stores, settings, config, None)
            build_s += time.perf_counter() - start
            print(f"segment {part + 1}/{args.segments}: {len(existing)} patches, {build_s:.0f} s", flush=True)
            del stores, vectors
        built_bytes = folder_bytes(folder)
        more = scenes_for(fill(real, size // 100, nn_distance, rng, args.fill), scene + 1)
        existing = Index.open(folder)
        before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
        start = time.perf_counter()
        write_generation(folder, existing, more, settings, config, None)
        append_s = time.perf_counter() - start
        written = sum(p.stat().st_size for p in folder.iterdir() if before.get(p.name) != p.stat().st_mtime_ns)
        untouched = all(before[name] == (folder / name).stat().st_mtime_ns for name in before if name != "index.json" and (folder / name).exists())
        del existing, more
        # everything after the build runs in a fresh process: the parent's memory (the synthetic data) would otherwise
        # sit in the page cache's way, and a spawned child's ru_maxrss starts at the parent's RSS (VmHWM does not)
        child = subprocess.run([sys.executable, __file__, "--measure", str(folder), "--queries", str(args.queries), "--fill", args.fill],
                               capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(HERE.parent)})  # fmt: skip
        if child.returncode:
            sys.exit(child.stderr)
        measured = json.loads(child.stdout.strip().splitlines()[-1])
        index = Index.open(folder)
        types = list(dict.fromkeys(segment.record["index_type"] for segment in index.segments))
        results.append({
            "size": size, "segments": len(index.segments), "type": " + ".join(types), "build_s": build_s,
            "index_mib": built_bytes / 2**20, "append_s": append_s, "append_written_mib": written / 2**20,
            "append_share_bytes": written / built_bytes, "append_share_time": append_s / build_s, "old_files_untouched": untouched,
            **measured,
        })  # fmt: skip
        print(json.dumps(results[-1]), flush=True)
        del index
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)

    lines = [
        f"\n## {scale_title(args)} ({dt.date.today().isoformat()})\n",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores. Command: `python benchmarks/bench_index_scale.py --sizes "
        f"{' '.join(map(str, args.sizes))} --augment {args.augment} --segments {args.segments} --fill {args.fill}`. "
        + (f"{len(real)} real Lite0 vectors (NAIP, 128-d) + synthetic fill (jittered copies); " if args.fill == "jitter" else
           "Gaussian vectors with the real Lite0 vectors' mean and covariance (a structureless worst case); ")
        + f"synthetic catalog rows with the real schema. Build = {args.segments} append(s) of equal size, one segment each "
        "(build s is their sum); append = 1 % more patches as a new segment. "
        "Open + one query in a fresh process (peak RSS = VmHWM, and the private part of it). Queries by patch id, k=10, "
        "no query expansion, the hits' rows included; p50/p95 of a second pass over 200 patches, and of the first pass "
        "(each IVF list mapped for the first time); bbox queries keep a box of about 7 x 7 patches around the example. Recall@10 against "
        "exact search over the searched vectors, 200 queries drawn like the fill.\n",
        "| patches | segments | FAISS | build s | index MiB | append s (share of build) | append MiB written (share of index) | old files untouched "
        "| open s | peak RSS (private) MiB | query p50 / p95 ms | first pass p50 / p95 ms | bbox query p50 / p95 ms | bbox k hits "
        "| recall@10 ids / scores |",
        "|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        *(f"| {r['size']} | {r['segments']} | {r['type']} | {r['build_s']:.0f} | {r['index_mib']:.0f} | {r['append_s']:.1f} ({100 * r['append_share_time']:.1f} %) "
          f"| {r['append_written_mib']:.1f} ({100 * r['append_share_bytes']:.1f} %) | {r['old_files_untouched']} | {r['open_s']:.1f} "
          f"| {r['peak_rss_mib']:.0f} ({r['peak_private_mib']:.0f}) | {r['query_p50_ms']:.1f} / {r['query_p95_ms']:.1f} "
          f"| {r['first_p50_ms']:.1f} / {r['first_p95_ms']:.1f} | {r['bbox_p50_ms']:.1f} / {r['bbox_p95_ms']:.1f} "
          f"| {100 * r['bbox_k_hits']:.0f} % | {r['recall_at_10']:.3f} / {r['score_recall_at_10']:.3f} |" for r in results),
        "",
    ]  # fmt: skip
    record("\n".join(lines), "index_scale_" + "_".join(map(str, args.sizes)) + f"_a{args.augment}_s{args.segments}_{args.fill}", results)


if __name__ == "__main__":
    main()

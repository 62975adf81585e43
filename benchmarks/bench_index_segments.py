"""Writing an index's segments in one process against on Dask workers: time, the driver's peak memory, the
workers' peaks, and whether the two indexes answer alike.

The staged scenes are what `rscbir index build` embeds into `.staging/` before it writes segments: raw
(pre-PCA) float16 vectors and catalog rows, scene by scene. Vectors: the real EfficientNet-Lite0 embeddings of
all NAIP years (bench_query.py) with synthetic fill (jittered copies, as bench_index_scale.py), lifted to
``--dim`` raw dimensions by a fixed random orthogonal map plus noise; catalog rows synthetic with the real
schema. Only the CNN pass is skipped. Each mode runs in a fresh process (its own VmHWM); the Dask mode starts a
LocalCluster of ``--workers`` single-threaded workers and reads each worker's VmHWM before it closes.

    python benchmarks/bench_index_segments.py [--size 300000] [--dim 1904] [--workers 2] [--augment 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_index_scale import fill, scenes_for  # noqa: E402
from bench_query import WORK, real_corpus  # noqa: E402
from record import record  # noqa: E402


def peak_mib() -> float:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024


def stage(folder: Path, size: int, dim: int) -> None:
    """``size`` staged vectors of ``dim`` raw dimensions in store folders of 10,000 patches (one scene each)."""
    rng = np.random.default_rng(0)
    real, nn_distance = real_corpus(128)
    lift = np.linalg.qr(rng.normal(size=(dim, 128)))[0].T.astype(np.float32)  # (128, dim), orthonormal rows
    vectors = np.concatenate([real[: min(len(real), size)], fill(real, max(0, size - len(real)), nn_distance, rng, "jitter")])
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for number, scene in enumerate(scenes_for(vectors, 0)):
        store = folder / f"{number:04d}"
        store.mkdir()
        raw = np.abs(scene.store.vectors @ lift + rng.normal(0, 0.002, (len(scene.store.vectors), dim))).astype(np.float16)
        np.save(store / "vectors.npy", raw)
        scene.store.catalog.to_parquet(store / "catalog.parquet", index=False)
        (store / "model.json").write_text(json.dumps({"scenes": [scene.record]}))
        (store / "record.json").write_text(json.dumps(scene.record))


def write(mode: str, staged_folder: Path, out: Path, workers: int, augment: int) -> dict:
    """One mode, in this (fresh) process: the segments written here or on a LocalCluster."""
    from rscbir.embed import EmbedOptions
    from rscbir.index import index_settings, write_generation
    from rscbir.index.distributed import write_generation_on
    from rscbir.index.writers import StagedScene
    from rscbir.models.config import ModelConfig
    from rscbir.store import EmbeddingStore
    from rscbir.tiling import TilingConfig

    config = ModelConfig("tf_efficientnet_lite0", "synthetic", "0" * 64, "avg", ("R", "G", "B"), (0, 1, 2), 224, 1904, stages=4)
    settings = index_settings(config, TilingConfig("320m"), EmbedOptions(dtype="float16"), augment=augment)
    staged = [StagedScene(json.loads((s / "record.json").read_text()), EmbeddingStore.open(s), s) for s in sorted(staged_folder.iterdir()) if s.is_dir()]
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    (out / ".staging").mkdir()
    result = {}
    if mode == "one":
        start = time.perf_counter()
        write_generation(out, None, staged, settings, config, None, search=False)  # as `rscbir index build` (reports, never searches)
        result["seconds"] = time.perf_counter() - start
    else:
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
            start = time.perf_counter()
            write_generation_on(client, out, None, staged, settings, config, None, search=False)
            result["seconds"] = time.perf_counter() - start
            result["worker_peaks_mib"] = sorted(client.run(peak_mib).values())
    shutil.rmtree(out / ".staging", ignore_errors=True)
    result["driver_peak_mib"] = peak_mib()
    return result


def compare(one: Path, spread: Path, queries: int = 500) -> dict:
    """How alike the two indexes are: stored vectors, and recall@10 of each search against the exact top 10."""
    from rscbir.index import Index

    a, b = Index.open(one), Index.open(spread)
    rng = np.random.default_rng(3)
    rows = np.sort(rng.choice(len(a), queries, replace=False))
    va, vb = np.asarray(a.vectors[rows], np.float32), np.asarray(b.vectors[rows], np.float32)
    asked = np.asarray(a.search_vectors[rows], np.float32)
    exact = []
    for start in range(0, len(a), 1 << 18):  # exact top 10 over the one-process index's searched vectors
        block = np.asarray(a.search_vectors[start : start + (1 << 18)], np.float32)
        sims = asked @ block.T
        top = np.argpartition(-sims, 10, axis=1)[:, :10]
        exact.append((np.take_along_axis(sims, top, 1), top + start))
    scores = np.concatenate([e[0] for e in exact], axis=1)
    ids = np.concatenate([e[1] for e in exact], axis=1)
    truth = np.take_along_axis(ids, np.argsort(-scores, axis=1)[:, :10], 1)
    recall = {name: float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, index.search(asked, 10)[1])])) for name, index in (("one", a), ("dask", b))}
    return {"segments": [len(a.segments), len(b.segments)], "max_vector_diff": float(np.abs(va - vb).max()),
            "max_augmented_diff": float(np.abs(asked - np.asarray(b.search_vectors[rows], np.float32)).max()),
            "recall_at_10_one": recall["one"], "recall_at_10_dask": recall["dask"], "index_type": b.manifest.index_type}  # fmt: skip


def run_size(size: int, args) -> dict:
    """Both modes on ``size`` staged patches, each in a fresh process, and how alike their indexes are."""
    staged, outs = WORK / f"segments_staged_{size}_{args.dim}", {m: WORK / f"segments_{m}" for m in ("one", "dask")}
    if not (staged / "done").exists():
        stage(staged, size, args.dim)
        (staged / "done").write_text("")
    result = {"size": size}
    for mode in ("one", "dask"):
        child = subprocess.run([sys.executable, __file__, "--mode", mode, "--sizes", str(size), "--dim", str(args.dim), "--workers",
                                str(args.workers), "--augment", str(args.augment)], capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(HERE.parent)})  # fmt: skip
        if child.returncode:
            sys.exit(child.stderr[-3000:])
        result[mode] = json.loads(child.stdout.strip().splitlines()[-1])
        print(size, mode, result[mode], flush=True)
    result["alike"] = compare(outs["one"], outs["dask"])
    print(size, result["alike"], flush=True)
    for folder in outs.values():
        shutil.rmtree(folder, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[150_000, 300_000, 600_000])
    parser.add_argument("--dim", type=int, default=1904, help="raw dimensions (1904: EfficientNet-Lite0, four stages, averaged)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--augment", type=int, default=5)
    parser.add_argument("--mode", choices=["one", "dask"], help=argparse.SUPPRESS)  # the fresh process of one mode
    args = parser.parse_args()
    if args.mode:
        size = args.sizes[0]
        staged, out = WORK / f"segments_staged_{size}_{args.dim}", WORK / f"segments_{args.mode}"
        print(json.dumps(write(args.mode, staged, out, args.workers, args.augment)))
        return
    rows = [run_size(size, args) for size in args.sizes]
    lines = [
        f"## Index segments written by Dask workers ({time.strftime('%Y-%m-%d')})",
        "",
        "`python benchmarks/bench_index_segments.py" + "".join(f" {a}" for a in sys.argv[1:]) + "`",
        "",
        f"Staged patches of {args.dim} raw dimensions (real NAIP Lite0 vectors + jittered fill, float16), PCA to 128-d, "
        f"augment {args.augment}, FAISS by size (auto); Dask: LocalCluster, {args.workers} workers x 1 thread. Each writer runs "
        "in a fresh process, one after the other; the driver's peak includes the LocalCluster's scheduler, which it hosts.",
        "",
        "| patches | FAISS | writer | segments | seconds | driver peak MiB | worker peaks MiB | recall@10 vs exact |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        alike, one, dask = r["alike"], r["one"], r["dask"]
        lines += [
            f"| {r['size']:,} | {alike['index_type']} | one process | {alike['segments'][0]} | {one['seconds']:.0f} | "
            f"{one['driver_peak_mib']:.0f} | - | {alike['recall_at_10_one']:.3f} |",
            f"| {r['size']:,} | {alike['index_type']} | Dask workers | {alike['segments'][1]} | {dask['seconds']:.0f} | "
            f"{dask['driver_peak_mib']:.0f} | {', '.join(f'{p:.0f}' for p in dask['worker_peaks_mib'])} | {alike['recall_at_10_dask']:.3f} |",
        ]  # fmt: skip
    lines += [
        "",
        "Dask / one process, same size: " + "; ".join(f"{r['size']:,}: driver peak {r['dask']['driver_peak_mib'] / r['one']['driver_peak_mib']:.2f}x, "
                                                       f"time {r['dask']['seconds'] / r['one']['seconds']:.2f}x" for r in rows) + ". "
        "Stored vectors differ by at most " + f"{max(r['alike']['max_vector_diff'] for r in rows):.1e}" + " (float16 storage); augmented "
        "vectors differ where the approximate neighbour searches (one graph in one process, one per segment on Dask) found "
        "different neighbours (at most " + f"{max(r['alike']['max_augmented_diff'] for r in rows):.1e}" + "). Up to 100,000 patches both "
        "search exactly and the indexes are equal (tests/test_index_distributed.py).",
    ]  # fmt: skip
    record("\n".join(lines), "index_segments", rows)


if __name__ == "__main__":
    main()

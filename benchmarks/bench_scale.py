"""In-process vs Dask LocalCluster (2 workers) on the same set, in one run.

Set: all 10 OSCD cities, both dates (Sentinel-2 band folders, RGB, 32 px patches) and all 10
NAIP years (RGB, 64 px patches). Each group goes through `embed_scenes`, first in this process,
then as Dask tasks on a LocalCluster of 2 single-threaded worker processes. Reports patches/s,
with and without the cluster's start-up, and checks that both runs store the same vectors.

    python benchmarks/bench_scale.py
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import record  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("RSCBIR_DATA", HERE.parents[1] / "shared" / "data"))
WORK = HERE / "_work"


def groups():
    from rscbir.models.load import model_for_scenes
    from rscbir.presets import open_scenes
    from rscbir.tiling import TilingConfig

    oscd = [DATA / "oscd" / city / f"imgs_{d}" for city in sorted(p.name for p in (DATA / "oscd").iterdir() if p.is_dir()) for d in (1, 2)]
    naip = sorted((DATA / "naip_timeseries").glob("*.tif"))
    out = []
    for name, paths, preset, tiling in (("OSCD 10 cities x 2 dates", oscd, "sentinel2", TilingConfig(32)),
                                        ("NAIP 10 years", naip, "naip", TilingConfig(64))):  # fmt: skip
        scenes, chosen = open_scenes(paths, preset)
        model, scenes = model_for_scenes(scenes, chosen)
        for scene in scenes:
            if scene.scaling.mode.value == "percentile":
                scene.band_stats()
        out.append((name, scenes, model, tiling))
    return out


def run(scenes, model, tiling, client) -> tuple[int, float, np.ndarray]:
    from rscbir.embed import EmbedOptions, embed_scenes
    from rscbir.scale import DaskRunner

    work = Path(tempfile.mkdtemp(dir=WORK))
    options = EmbedOptions(dtype="float32", workers=0)
    try:
        start = time.perf_counter()
        runner = DaskRunner(client, model, options) if client is not None else None
        store = embed_scenes(scenes, work / "emb", model, tiling, options=options, runner=runner)
        seconds = time.perf_counter() - start
        return len(store.vectors), seconds, np.asarray(store.vectors)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    if not (DATA / "oscd").is_dir():
        sys.exit(f"{DATA}/oscd not found; set RSCBIR_DATA")
    from distributed import Client, LocalCluster

    from rscbir.models.load import configure_threads

    configure_threads()
    WORK.mkdir(exist_ok=True)
    sets = groups()
    rows = []
    local_results = {}
    for name, scenes, model, tiling in sets:
        count, seconds, vectors = run(scenes, model, tiling, None)
        local_results[name] = vectors
        rows.append((name, "in-process (ONNX Runtime, 2 threads)", count, seconds))
        print(f"{name}: in-process {count} patches in {seconds:.1f} s = {count / seconds:.1f}/s", flush=True)
    start = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    startup = time.perf_counter() - start
    try:
        for name, scenes, model, tiling in sets:
            count, seconds, vectors = run(scenes, model, tiling, client)
            same = np.abs(vectors - local_results[name]).max() if vectors.shape == local_results[name].shape else float("inf")
            rows.append((name, f"LocalCluster 2 workers x 1 thread (max |diff| {same:.1e})", count, seconds))
            print(f"{name}: cluster {count} patches in {seconds:.1f} s = {count / seconds:.1f}/s, max diff {same:.1e}", flush=True)
    finally:
        client.close()
        cluster.close()
    total_local = sum(r[3] for r in rows if r[1].startswith("in-process"))
    total_cluster = sum(r[3] for r in rows if r[1].startswith("LocalCluster"))
    patches = sum(r[2] for r in rows if r[1].startswith("in-process"))
    lines = [
        f"\n## Scale-out: in-process vs Dask LocalCluster ({dt.date.today().isoformat()})\n",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores. Command: `python benchmarks/bench_scale.py`. "
        "EfficientNet-Lite0 on RGB at 224 px, ONNX Runtime, store as float32. Cluster start-up "
        f"{startup:.1f} s (not in the rows; each worker also loads the model once, which is in them).\n",
        "| set | run | patches | seconds | patches/s |",
        "|---|---|---:|---:|---:|",
        *(f"| {n} | {how} | {c} | {s:.1f} | {c / s:.1f} |" for n, how, c, s in rows),
        "",
        f"All {patches} patches: in-process {patches / total_local:.1f} patches/s, LocalCluster "
        f"{patches / total_cluster:.1f} patches/s (ratio {total_local / total_cluster:.2f}; "
        f"{patches / (total_cluster + startup):.1f} patches/s counting start-up).",
    ]
    record("\n".join(lines), "scale", [dict(zip(("n", "how", "patches", "seconds"), r)) for r in rows])
    print("\n".join(lines[-1:]))


if __name__ == "__main__":
    main()

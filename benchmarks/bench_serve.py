"""Load on `rscbir serve` over loopback: 8 threads x 50 requests to /api/query, then to the tiles.

The server runs as its own process (`rscbir serve`, werkzeug's threaded server), as a user starts
it; the clients are threads of this process. Index: NAIP 2009 + 2020 aligned, 320 m patches (308
patches), the demo index. Each query asks k=10 at the centre of a random indexed patch, with the
CLI's defaults (query expansion 10). Every answer must be a 200 with 10 hits.

    python benchmarks/bench_serve.py [--threads 8] [--requests 50]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("RSCBIR_DATA", HERE.parents[1] / "shared" / "data"))
NAIP = DATA / "naip_timeseries" / "m_4709963_se_14_1_{}.tif"
RSCBIR = [sys.executable, "-m", "rscbir"]
sys.path.insert(0, str(HERE))
from record import record  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, bytes, float]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as answer:
        body = answer.read()
        return answer.status, body, time.perf_counter() - start


def load(urls: list[str], threads: int) -> tuple[np.ndarray, list]:
    with ThreadPoolExecutor(threads) as pool:
        answers = list(pool.map(get, urls))
    return np.array([a[2] for a in answers]), answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--requests", type=int, default=50, help="per thread")
    args = parser.parse_args()
    total = args.threads * args.requests
    with tempfile.TemporaryDirectory() as scratch:
        index = Path(scratch) / "naip_index"
        subprocess.run([*RSCBIR, "-q", "index", "build", str(NAIP).format("20090818"), str(NAIP).format("20200831"), "--align", "--preset", "naip",
                        "--patch-size", "320m", "-o", str(index)], check=True)  # fmt: skip
        port = free_port()
        server = subprocess.Popen([*RSCBIR, "serve", str(index), "--port", str(port)], stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                try:
                    get(base + "/api/info")
                    break
                except OSError:
                    time.sleep(0.1)
            import geopandas as gpd

            catalog = gpd.read_parquet(next(index.glob("catalog-*.parquet")))
            bounds = catalog.geometry.bounds
            centres = gpd.GeoSeries.from_xy((bounds.minx + bounds.maxx) / 2, (bounds.miny + bounds.maxy) / 2)  # box centres
            rng = np.random.default_rng(0)
            picks = rng.integers(0, len(catalog), total)
            query_urls = [f"{base}/api/query?lon={centres.x.iloc[i]}&lat={centres.y.iloc[i]}&k=10" for i in picks]
            get(query_urls[0])  # warm: the first request opens the index
            q_times, q_answers = load(query_urls, args.threads)
            ok = sum(a[0] == 200 and len(json.loads(a[1])["features"]) == 10 for a in q_answers)
            import morecantile

            tms = morecantile.tms.get("WebMercatorQuad")
            scenes = sorted(catalog["scene_id"].unique())
            tiles = [tms.tile(centres.x.iloc[i], centres.y.iloc[i], 16) for i in picks]
            tile_urls = [f"{base}/api/tiles/{scenes[n % len(scenes)]}/{t.z}/{t.x}/{t.y}.png" for n, t in enumerate(tiles)]
            t_times, t_answers = load(tile_urls, args.threads)
            tiles_ok = sum(a[0] == 200 for a in t_answers)
        finally:
            server.terminate()
            server.wait(10)

    def row(name, times, good):
        p50, p95 = np.percentile(times * 1000, [50, 95])
        return f"| {name} | {len(times)} | {good} | {p50:.1f} | {p95:.1f} | {times.max() * 1000:.1f} |"

    text = "\n".join(
        [
            f"\n## rscbir serve under load ({dt.date.today().isoformat()})\n",
            f"Machine: {platform.machine()}, {os.cpu_count()} cores. Command: `python benchmarks/bench_serve.py --threads {args.threads} "
            f"--requests {args.requests}`. Server: `rscbir serve` in its own process (werkzeug, threaded) on loopback; "
            f"{args.threads} client threads x {args.requests} requests each. Index: NAIP 2009 + 2020, 320 m patches (308). "
            "Queries: k=10 at random patch centres, CLI defaults; tiles: 256 px PNG at zoom 16 rendered by rio-tiler from the GeoTIFFs.\n",
            "| endpoint | requests | succeeded | p50 ms | p95 ms | max ms |",
            "|---|---|---|---|---|---|",
            row("/api/query", q_times, ok),
            row("/api/tiles", t_times, tiles_ok),
            "",
        ]
    )
    record(text, "serve")
    if ok != total or tiles_ok != total:
        sys.exit(f"{total - ok} queries and {total - tiles_ok} tiles failed")


if __name__ == "__main__":
    main()

"""Tiling throughput and peak memory: streaming tiler vs reading the whole raster.

The input is real: ../shared/data/rasterio/RGB.byte.tif (Landsat 7, 791 x 718 px,
EPSG:32618) exposed through a GDAL VRT at a finer resolution, N x N pixels, so
the raster is as large as we like without a large file on disk. Each
measurement runs in a fresh subprocess so its peak RSS (ru_maxrss) is its own.

    python benchmarks/bench_tiling.py [--sizes 5000 10000 20000] [--patch 64]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import record  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("RSCBIR_DATA", HERE.parents[1] / "shared" / "data"))
WORK = HERE / "_work"

VRT = """<VRTDataset rasterXSize="{n}" rasterYSize="{n}">
  <SRS>{srs}</SRS>
  <GeoTransform>{gt}</GeoTransform>
{bands}
</VRTDataset>"""
BAND = """  <VRTRasterBand dataType="Byte" band="{b}">
    <NoDataValue>0</NoDataValue>
    <SimpleSource>
      <SourceFilename relativeToVRT="0">{src}</SourceFilename>
      <SourceBand>{b}</SourceBand>
      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>
      <DstRect xOff="0" yOff="0" xSize="{n}" ySize="{n}"/>
    </SimpleSource>
  </VRTRasterBand>"""


def make_vrt(n: int) -> Path:
    """RGB.byte.tif resampled onto an n x n grid covering the same ground."""
    import rasterio

    src = DATA / "rasterio" / "RGB.byte.tif"
    with rasterio.open(src) as ds:
        t = ds.transform
        gt = (t.c, t.a * ds.width / n, 0.0, t.f, 0.0, t.e * ds.height / n)
        bands = "\n".join(BAND.format(b=b, src=src, w=ds.width, h=ds.height, n=n) for b in range(1, 4))
        text = VRT.format(n=n, srs=ds.crs.to_wkt(), gt=", ".join(repr(v) for v in gt), bands=bands)
    WORK.mkdir(exist_ok=True)
    path = WORK / f"rgb_{n}.vrt"
    path.write_text(text)
    return path


def child(mode: str, path: str, patch: int) -> dict:
    """Runs inside the subprocess: one measurement."""
    import numpy as np

    start = time.perf_counter()
    if mode == "stream":
        from rscbir.scene import Scene
        from rscbir.tiling import TilingConfig, iter_patches

        scene = Scene.open(path)
        count, checksum = 0, 0
        for p in iter_patches(scene, TilingConfig(patch, max_nodata=1.0)):
            count += 1
            checksum += int(p.data[0, 0, 0])
    elif mode == "catalog":
        from rscbir.scene import Scene
        from rscbir.catalog import tile_scene
        from rscbir.tiling import TilingConfig

        count = len(tile_scene(Scene.open(path), TilingConfig(patch, max_nodata=1.0)))
    else:  # whole: read everything, then cut patches from memory
        import rasterio

        with rasterio.open(path) as ds:
            data = ds.read()
        rows, cols = data.shape[1] // patch, data.shape[2] // patch
        count = 0
        for r in range(rows):
            for c in range(cols):
                _ = data[:, r * patch : (r + 1) * patch, c * patch : (c + 1) * patch]
                count += 1
        del np
    seconds = time.perf_counter() - start
    return {"patches": count, "seconds": seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure(mode: str, path: Path, patch: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(path), str(patch)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000])
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], int(args.child[2]))))
        return
    if not (DATA / "rasterio" / "RGB.byte.tif").exists():
        sys.exit(f"{DATA}/rasterio/RGB.byte.tif not found; set RSCBIR_DATA to the shared data folder")

    rows = []
    for n in args.sizes:
        path = make_vrt(n)
        for mode in ("stream", "catalog", "whole"):
            r = measure(mode, path, args.patch)
            rows.append((n, mode, r["patches"], r["seconds"], r["patches"] / r["seconds"], r["peak_rss_mib"]))
            print(f"{n:>6} px  {mode:<8} {r['patches']:>7} patches  {r['seconds']:7.2f} s  "
                  f"{r['patches'] / r['seconds']:9.0f} patches/s  peak RSS {r['peak_rss_mib']:7.0f} MiB", flush=True)

    lines = [
        f"\n## Tiling: streaming vs whole-raster read ({dt.date.today().isoformat()})\n",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}. "
        f"Command: `python benchmarks/bench_tiling.py --sizes {' '.join(map(str, args.sizes))} --patch {args.patch}`. "
        "Input: real `rasterio/RGB.byte.tif` (3 bands, uint8) through a VRT upsampled to N x N px; "
        f"{args.patch} px patches, stride {args.patch}. `stream` = `iter_patches` with pixels, `catalog` = "
        "`tile_scene` (records + EPSG:4326 polygons), `whole` = `DatasetReader.read()` of the full raster then slicing. "
        "Each row is a fresh process; peak RSS is its ru_maxrss.\n",
        "| N (px) | mode | patches | seconds | patches/s | peak RSS (MiB) |",
        "|---:|---|---:|---:|---:|---:|",
        *(f"| {n} | {mode} | {count} | {sec:.2f} | {rate:.0f} | {rss:.0f} |" for n, mode, count, sec, rate, rss in rows),
    ]
    record("\n".join(lines), "tiling", [dict(zip(("n", "mode", "patches", "seconds", "patches_per_s", "peak_rss_mib"), r)) for r in rows])


if __name__ == "__main__":
    main()

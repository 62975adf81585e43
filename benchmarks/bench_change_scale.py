"""Pixel-level change maps as the scene grows: time and peak memory of `rscbir change` on N x N pairs.

The pair is real imagery: NAIP 2009 and 2020 of one tile (2020 read onto 2009's grid), each wrapped around to
N x N pixels and written as tiled GeoTIFFs with 2009's georeferencing. Each size runs `rscbir change BEFORE AFTER
--preset naip --patch-size 64` (the default pixel map, fusion of CNN and CVA evidence) in a fresh process; the
peak is that process's VmHWM.

    python benchmarks/bench_change_scale.py [--sizes 1000 2000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parent))
from child import rscbir_child  # noqa: E402
from record import record  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("RSCBIR_DATA", HERE.parents[1] / "shared" / "data"))
NAIP = str(DATA / "naip_timeseries" / "m_4709963_se_14_1_{}.tif")


def pair(size: int, folder: Path) -> tuple[Path, Path]:
    """NAIP 2009 and 2020 (on 2009's grid) wrapped to ``size`` x ``size`` px, as tiled GeoTIFFs."""
    from rscbir.scene import Scene

    before = Scene.open(NAIP.format("20090818"))
    after = Scene.open(NAIP.format("20200831"))
    grid = before.grid
    out = []
    for name, scene in (("before", before), ("after", after)):
        with scene.reader(grid) as reader:
            data = reader.read(Window(0, 0, grid.width, grid.height))
        reps = (1, -(-size // data.shape[1]), -(-size // data.shape[2]))
        mirrored = np.concatenate([data, data[:, ::-1]], axis=1)  # mirror, so seams do not look like edges of change
        mirrored = np.concatenate([mirrored, mirrored[:, :, ::-1]], axis=2)
        big = np.tile(mirrored, (1, -(-reps[1] // 2), -(-reps[2] // 2)))[:, :size, :size]
        path = folder / f"{name}_{size}.tif"
        profile = {"driver": "GTiff", "width": size, "height": size, "count": big.shape[0], "dtype": big.dtype, "crs": grid.crs,
                   "transform": grid.transform, "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate"}  # fmt: skip
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(big)
        out.append(path)
    return out[0], out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rscbir-change-scale-"))
    rows = []
    try:
        for size in args.sizes:
            before, after = pair(size, work)
            seconds, peak = rscbir_child("-q", "change", before, after, "--preset", "naip", "--patch-size", "64", "-o", work / f"c{size}.geojson",
                                  "--scores", work / f"s{size}.tif")  # fmt: skip
            rows.append({"size": size, "mpx": size * size / 1e6, "seconds": seconds, "peak_mib": peak})
            print(rows[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        f"## Pixel change maps as the scene grows ({dt.date.today().isoformat()}, issue 22)\n",
        f"Machine: {os.cpu_count()} cores. Command: `python benchmarks/bench_change_scale.py --sizes {' '.join(map(str, args.sizes))}`. "
        "NAIP 2009 and 2020 of one tile (2020 on 2009's grid) mirrored to N x N px; `rscbir change BEFORE AFTER --preset naip "
        "--patch-size 64 --scores S.tif` (pixel map, fusion), each in a fresh process, peak = its VmHWM.\n",
        "| N x N | Mpx | seconds | Mpx/s | peak RSS MiB | MiB per Mpx |",
        "|---:|---:|---:|---:|---:|---:|",
        *(f"| {r['size']} | {r['mpx']:.1f} | {r['seconds']:.0f} | {r['mpx'] / r['seconds']:.3f} | {r['peak_mib']:.0f} | "
          f"{r['peak_mib'] / r['mpx']:.0f} |" for r in rows),  # fmt: skip
    ]
    record("\n".join(lines), "change_scale", rows)


if __name__ == "__main__":
    main()

"""Pixel-level change maps as the scene grows: time and peak memory of `rscbir change` on N x N pairs.

The pair is real imagery: NAIP 2009 and 2020 of one tile (2020 read onto 2009's grid), each wrapped around to
N x N pixels and written as tiled GeoTIFFs with 2009's georeferencing. Each size runs `rscbir change BEFORE AFTER
--preset naip --patch-size 64` (the default pixel map, fusion of CNN and CVA evidence, made in strips) in a fresh
process; the peak is that process's VmHWM. The cache starts empty: the first size runs twice, the first time building
the model and caching its pair graph. ``--torch-at N`` also runs size N with ``--runtime torch``, side by side.

    python benchmarks/bench_change_scale.py [--sizes 1000 4000 10000] [--torch-at 2000]
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
    parser.add_argument("--torch-at", type=int, default=None, help="also run this size with --runtime torch")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rscbir-change-scale-"))
    rows = []
    try:
        os.environ["RSCBIR_CACHE"] = str(work / "cache")  # an empty cache: the first run exports the pair graph
        runs = [(args.sizes[0], "auto", "auto, first run")] + [(size, "auto", "auto") for size in args.sizes]
        runs += [(args.torch_at, "torch", "torch")] if args.torch_at else []
        for size, runtime, label in runs:
            before, after = pair(size, work)
            seconds, peak = rscbir_child("-q", "change", before, after, "--preset", "naip", "--patch-size", "64", "-o", work / f"c{size}.geojson",
                                         "--scores", work / f"s{size}.tif", "--runtime", runtime)  # fmt: skip
            rows.append({"size": size, "runtime": label, "mpx": size * size / 1e6, "seconds": seconds, "peak_mib": peak})
            print(rows[-1], flush=True)
            for path in (before, after, work / f"s{size}.tif"):
                path.unlink(missing_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        f"## Pixel change maps as the scene grows ({dt.date.today().isoformat()}, issue 22)\n",
        f"Machine: {os.cpu_count()} cores. Command: `python benchmarks/bench_change_scale.py --sizes {' '.join(map(str, args.sizes))}"
        f"{f' --torch-at {args.torch_at}' if args.torch_at else ''}`. "
        "NAIP 2009 and 2020 of one tile (2020 on 2009's grid) mirrored to N x N px; `rscbir change BEFORE AFTER --preset naip "
        "--patch-size 64 --scores S.tif --runtime R` (pixel map, fusion, made in strips), each in a fresh process, peak = its VmHWM.\n",
        "| N x N | runtime | Mpx | seconds | Mpx/s | peak RSS MiB |",
        "|---:|---|---:|---:|---:|---:|",
        *(f"| {r['size']} | {r['runtime']} | {r['mpx']:.1f} | {r['seconds']:.0f} | {r['mpx'] / r['seconds']:.3f} | {r['peak_mib']:.0f} |"
          for r in rows),  # fmt: skip
        "",
        "The map is made in strips of rows (`rscbir.change.streamed`); `tests/test_change_streamed.py` checks that it equals "
        "the map made whole (areas, score COG, preview mask). `auto, first run` is the run that builds the torch model and "
        "exports the pair graph into an empty cache; the `auto` rows after it read the cached graph and never import torch; "
        "`torch` scores with the torch model. Before strips (same pairs, 2026-12-03): 1k / 2k / 4k took 14 / 38 / 144 s at "
        "1284 / 1349 / 1841 MiB, about 41 MiB per Mpx.",
    ]
    record("\n".join(lines), "change_scale", rows)


if __name__ == "__main__":
    main()

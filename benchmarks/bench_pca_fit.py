"""Fitting the PCA of a store or index on its 200,000-vector sample: the old route (the sample read whole, then
centred in float64) against the summed moments read a block of rows at a time (`PCAWhitening.fit_rows`).

Vectors: ``--rows`` x ``--dim`` float16 in a memory-mapped .npy (non-negative, rank 64, like pooled CNN features;
only the fit's time and memory are measured, not what the PCA is worth). Each route runs in a fresh process and
reports its own VmHWM (the sample's file pages it reads count too).

    python benchmarks/bench_pca_fit.py [--rows 250000] [--dim 1904]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_query import WORK  # noqa: E402
from record import record  # noqa: E402


def fit(route: str, path: Path) -> dict:
    from rscbir.models.whitening import PCAWhitening

    source = np.load(path, mmap_mode="r")
    rows = np.sort(np.random.default_rng(0).permutation(len(source))[:200_000])
    start = time.perf_counter()
    if route == "whole":  # what PCAWhitening.fit did before 2026-12-03, after the caller read the sample
        centred = np.asarray(np.asarray(source[rows]), np.float64)
        centred -= centred.mean(axis=0)
        values, vectors = np.linalg.eigh(centred.T @ centred / (len(centred) - 1))
        projection = vectors[:, np.argsort(values)[::-1][:128]]
    else:
        projection = PCAWhitening.fit_rows([(source, rows)], 128).projection
    seconds = time.perf_counter() - start
    peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024
    np.save(path.with_suffix(f".{route}.npy"), projection)
    return {"route": route, "seconds": seconds, "peak_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=250_000)
    parser.add_argument("--dim", type=int, default=1904)
    parser.add_argument("--route", choices=["whole", "moments"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    path = WORK / f"pca_fit_{args.rows}_{args.dim}.npy"
    if args.route:
        print(json.dumps(fit(args.route, path)))
        return
    WORK.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(64, args.dim)).astype(np.float32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(args.rows, args.dim))
    for start in range(0, args.rows, 25_000):
        count = min(25_000, args.rows - start)
        out[start : start + count] = np.abs(rng.normal(size=(count, 64)).astype(np.float32) @ basis) / 10
    out.flush()
    del out
    results = []
    for route in ("whole", "moments"):
        child = subprocess.run([sys.executable, __file__, "--route", route, "--rows", str(args.rows), "--dim", str(args.dim)],
                               capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(HERE.parent)})  # fmt: skip
        if child.returncode:
            sys.exit(child.stderr[-2000:])
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    a, b = (np.load(path.with_suffix(f".{r}.npy")) for r in ("whole", "moments"))
    agree = float(np.abs(np.abs(a) - np.abs(b)).max())  # eigenvector signs are arbitrary in the old route
    for file in (path, path.with_suffix(".whole.npy"), path.with_suffix(".moments.npy")):
        file.unlink()
    whole, moments = results
    lines = [
        f"## PCA fit on a 200,000-vector sample ({time.strftime('%Y-%m-%d')})",
        "",
        "`python benchmarks/bench_pca_fit.py" + "".join(f" {a}" for a in sys.argv[1:]) + "`",
        "",
        f"{args.rows:,} x {args.dim} float16 vectors memory-mapped, 128 components, each route in a fresh process.",
        "",
        "| route | seconds | peak MiB |",
        "|---|---:|---:|",
        f"| sample read whole, centred in float64 (before) | {whole['seconds']:.1f} | {whole['peak_mib']:.0f} |",
        f"| moments summed a block of rows at a time (`fit_rows`) | {moments['seconds']:.1f} | {moments['peak_mib']:.0f} |",
        "",
        f"Peak {moments['peak_mib'] / whole['peak_mib']:.2f}x, time {moments['seconds'] / whole['seconds']:.2f}x; the components agree "
        f"to {agree:.1e} (up to sign). Dask workers sum the same moments over their parts of an index (`index build --scheduler`).",
    ]  # fmt: skip
    record("\n".join(lines), "pca_fit", results)


if __name__ == "__main__":
    main()

"""Whole-process embedding of the 10 NAIP dates against the model alone, measured side by side in one run.

Rows, each the best of ``--repeat`` paired rounds:

1. ``rscbir embed`` of the 10 NAIP tiles (from the cached ONNX graph after the first round: no torch) (320 m patches, the ``naip`` preset, 1,540 patches) as a fresh process:
   wall time and peak RSS (``ru_maxrss`` of the child);
2. model only: the same 1,540 patches, already read, scaled and resized, through the same ONNX Runtime session;
3. ``embed_scenes`` in this process (model already built): the whole process less start-up;
4. the PCA fit of the store (1,540 x 7,616 grid-pooled vectors -> 128-d): eigen-decomposition of the Gram matrix
   (the default) against the SVD of the data (before).

    python benchmarks/bench_embed_process.py [--repeat 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from child import rscbir_child  # noqa: E402
from record import record  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("RSCBIR_DATA", HERE.parents[1] / "shared" / "data"))
TILES = sorted((DATA / "naip_timeseries").glob("m_*.tif"))
ARGS = ["--preset", "naip", "--patch-size", "320m"]


def whole_process(out: Path) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of ``rscbir embed`` in a fresh process."""
    shutil.rmtree(out, ignore_errors=True)
    return rscbir_child("-q", "embed", *TILES, *ARGS, "-o", out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if len(TILES) != 10:
        sys.exit(f"needs the 10 NAIP tiles in {DATA / 'naip_timeseries'}")
    import torch

    from rscbir.cli.options import length
    from rscbir.models.load import model_for_scenes
    from rscbir.models.options import ModelOptions
    from rscbir.models.runtime import forward_for
    from rscbir.models.whitening import PCAWhitening
    from rscbir.defaults import DEFAULT_POOLING
    from rscbir.presets import SceneOptions
    from rscbir.tiling import TilingConfig, iter_patches

    work = Path(tempfile.mkdtemp(prefix="rscbir-bench-"))
    try:
        scenes, preset = SceneOptions(preset="naip").open(TILES)
        model, scenes = model_for_scenes(scenes, preset, ModelOptions(pooling=DEFAULT_POOLING))  # as `rscbir embed`
        tiling = TilingConfig(length("320m"))
        patches = [torch.from_numpy(s.scale(p.data)) for s in scenes for p in iter_patches(s, tiling)]
        forward = forward_for(model, "onnx")
        batches = [torch.stack(patches[i : i + 8]) for i in range(0, len(patches), 8)]  # the default batch
        with torch.inference_mode():
            batches = [model.resize(b) for b in batches]
        forward(batches[0])

        def model_only() -> float:
            start = time.perf_counter()
            for batch in batches:
                forward(batch)
            return time.perf_counter() - start

        rounds = {"whole": [], "rss": [], "model": [], "in process": []}
        for _ in range(args.repeat):
            seconds, rss = whole_process(work / "whole")
            rounds["whole"].append(seconds)
            rounds["rss"].append(rss)
            rounds["model"].append(model_only())
            rounds["in process"].append(in_process(scenes, model, tiling, work / "a"))
        raw = np.concatenate([forward(b).numpy() for b in batches])
        pca_rows = []
        for name, fit in (("Gram eigh (default)", lambda: PCAWhitening.fit(raw, 128)), ("SVD of the data (before)", lambda: svd_fit(raw, 128))):
            start = time.perf_counter()
            fit()
            pca_rows.append((name, time.perf_counter() - start))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    best = {k: min(v) for k, v in rounds.items()}
    n = len(patches)
    lines = [
        f"## Whole process against the model alone ({dt.date.today().isoformat()})\n",
        f"Machine: {os.cpu_count()} cores. Command: `python benchmarks/bench_embed_process.py --repeat {args.repeat}`. "
        f"Input: the 10 NAIP tiles of `naip_timeseries` (`rscbir embed {' '.join(ARGS)}`, {n} patches, efficientnet_lite0, "
        "grid pooling, ONNX Runtime fp32, batch 8). The command runs from the model graph in the cache (no torch) once "
        "the first round has put it there. Best of the paired rounds.\n",
        "| what | seconds | patches/s |",
        "|---|---:|---:|",
        f"| `rscbir embed`, whole process (peak RSS {best['rss']:.0f} MiB) | {best['whole']:.1f} | {n / best['whole']:.0f} |",
        f"| `embed_scenes` in process (model built, modules imported) | {best['in process']:.1f} | {n / best['in process']:.0f} |",
        f"| model only (patches already read, scaled, resized) | {best['model']:.1f} | {n / best['model']:.0f} |",
        "",
        f"Whole process / model only: **{best['whole'] / best['model']:.2f}x**; in process / model only: "
        f"**{best['in process'] / best['model']:.2f}x** (the rest is start-up: imports and building the model).\n",
        "| PCA fit, 1,540 x 7,616 -> 128 | seconds |",
        "|---|---:|",
        *(f"| {name} | {seconds:.2f} |" for name, seconds in pca_rows),
    ]
    record("\n".join(lines), "embed_process", {"rounds": rounds, "patches": n, "pca": pca_rows})


def in_process(scenes, model, tiling, out: Path) -> float:
    from rscbir.embed import embed_scenes
    from rscbir.store import EmbedOptions

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    embed_scenes(scenes, out, model, tiling, options=EmbedOptions(workers=0))
    return time.perf_counter() - start


def svd_fit(vectors: np.ndarray, dim: int) -> np.ndarray:
    centred = np.asarray(vectors, np.float64) - vectors.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return vt[:dim].T


if __name__ == "__main__":
    main()

"""Whole-process embedding of the 10 NAIP tiles: `rscbir embed` against TorchGeo's pipeline, side by side.

Both sides embed 320 m (64 px) patches of the same 10 files with the same model (EfficientNet-Lite0, grid pooling,
224 px input) run by the same ONNX Runtime graph; what differs is everything around the model:

* rscbir: ``rscbir embed TILES --preset naip --patch-size 320m`` (the cached graph: no torch in the process);
* TorchGeo: ``NAIP(paths=TILES, bands=("R", "G", "B"))`` + ``GridGeoSampler(size=64, stride=64)`` +
  ``DataLoader(batch_size=8, collate_fn=stack_samples)``, each batch scaled to [0, 1], resized by the model's own
  antialiased resize and run through the model in torch (as a TorchGeo pipeline runs it), and again through
  rscbir's ONNX Runtime forward (``forward_for(model, "onnx")``: the same graph as rscbir, so only the pipeline
  around the model differs); vectors kept in memory.

Each side runs in a fresh process, in paired rounds (rscbir, TorchGeo, rscbir, ...); the best of ``--repeat``
rounds is kept, peak = the process's VmHWM. TorchGeo is not an rscbir dependency: install it beside the
environment (``pip install --target DIR torchgeo ...``) and pass ``--torchgeo-path DIR``, or have it importable.

    python benchmarks/bench_torchgeo.py [--repeat 2] [--torchgeo-path /tmp/tg]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from child import rscbir_child  # noqa: E402
from record import record  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("RSCBIR_DATA", HERE.parents[1] / "shared" / "data"))
TILES = sorted((DATA / "naip_timeseries").glob("m_*.tif"))

TORCHGEO = """
import sys, time
import numpy as np
import torch
from torch.utils.data import DataLoader
from torchgeo.datasets import NAIP, stack_samples
from torchgeo.samplers import GridGeoSampler
from rscbir.defaults import DEFAULT_POOLING
from rscbir.models.load import load_feature_model
from rscbir.models.options import ModelOptions
from rscbir.models.runtime import forward_for

torch.set_num_threads(2)
dataset = NAIP(paths=sys.argv[2:], bands=("R", "G", "B"))
sampler = GridGeoSampler(dataset, size=64, stride=64)
loader = DataLoader(dataset, sampler=sampler, batch_size=8, collate_fn=stack_samples)
model = load_feature_model(["R", "G", "B"], pooling=DEFAULT_POOLING)
forward = forward_for(model, sys.argv[1])
vectors = []
with torch.inference_mode():
    for batch in loader:
        x = batch["image"].float() / 255.0
        vectors.append(forward(model.resize(x)).numpy())
vectors = np.concatenate(vectors)
print(len(vectors), file=sys.stderr)
print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0], file=sys.stderr)
"""


def torchgeo_child(path: str | None, runtime: str) -> tuple[float, float, int]:
    """(seconds, peak MiB, patches) of the TorchGeo pipeline in a fresh process, the model run by ``runtime``."""
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = os.pathsep.join([path, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", TORCHGEO, runtime, *map(str, TILES)], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"the TorchGeo pipeline failed:\n{done.stderr[-2000:]}")
    lines = done.stderr.strip().splitlines()
    return seconds, int(lines[-1]) / 1024, int(lines[-2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--torchgeo-path", default=None, help="a folder holding torchgeo and its dependencies (pip install --target)")
    args = parser.parse_args()
    if len(TILES) != 10:
        sys.exit(f"needs the 10 NAIP tiles in {DATA / 'naip_timeseries'}")
    probe = subprocess.run([sys.executable, "-c", "import torchgeo; print(torchgeo.__version__)"], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": args.torchgeo_path or os.environ.get("PYTHONPATH", "")})  # fmt: skip
    if probe.returncode:
        sys.exit("TorchGeo is not importable: pip install --target DIR torchgeo (and what it needs), then --torchgeo-path DIR")
    version = probe.stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="rscbir-bench-tg-"))
    rounds: dict[str, list] = {"rscbir": [], "torchgeo": [], "torchgeo_onnx": []}
    patches = 0
    try:
        rscbir_child("-q", "embed", *TILES, "--preset", "naip", "--patch-size", "320m", "-o", work / "warm")  # puts the graph in the cache
        for _ in range(args.repeat):
            shutil.rmtree(work / "store", ignore_errors=True)
            rounds["rscbir"].append(rscbir_child("-q", "embed", *TILES, "--preset", "naip", "--patch-size", "320m", "-o", work / "store"))
            for name, runtime in (("torchgeo", "torch"), ("torchgeo_onnx", "onnx")):
                seconds, peak, patches = torchgeo_child(args.torchgeo_path, runtime)
                rounds[name].append((seconds, peak))
            print(rounds, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = {name: min(values) for name, values in rounds.items()}
    rate = {name: (1540 if name == "rscbir" else patches) / best[name][0] for name in best}
    described = {
        "rscbir": "`rscbir embed --preset naip --patch-size 320m` (cached ONNX graph, no torch)",
        "torchgeo": "TorchGeo `NAIP` + `GridGeoSampler` + `DataLoader` (batch 8), model in torch",
        "torchgeo_onnx": "the same TorchGeo pipeline, model through rscbir's ONNX Runtime forward",
    }
    lines = [
        f"## Whole-process embedding against TorchGeo ({dt.date.today().isoformat()}, issue 22)\n",
        f"Machine: {os.cpu_count()} cores. Command: `python benchmarks/bench_torchgeo.py --repeat {args.repeat} --torchgeo-path DIR` "
        f"(TorchGeo {version}). The 10 NAIP tiles, 320 m (64 px) patches, EfficientNet-Lite0 with grid pooling at 224 px; each a "
        "fresh process, paired rounds, best kept, peak = VmHWM.\n",
        "| pipeline | patches | seconds | patches/s | peak RSS MiB | rscbir's patches/s over it |",
        "|---|---:|---:|---:|---:|---:|",
        *(f"| {described[name]} | {1540 if name == 'rscbir' else patches} | {best[name][0]:.1f} | {rate[name]:.0f} | {best[name][1]:.0f} | "
          f"{rate['rscbir'] / rate[name]:.2f}x |" for name in described),  # fmt: skip
        "",
        "TorchGeo's grid covers each tile with chips that may reach past its edge, hence its patch count; the ratio is "
        "taken on patches per second.",
    ]
    ratio = {name: rate["rscbir"] / rate[name] for name in described}
    record("\n".join(lines), "torchgeo", {"rounds": rounds, "patches_torchgeo": patches, "ratio_patches_per_s": ratio})


if __name__ == "__main__":
    main()

"""Embedding speed, measured side by side in one run.

1. model only: forward img/s at batch 64 on random 224 px input, for eager
   (contiguous), channels_last, and ONNX Runtime (fp32, and int8 dynamic
   quantisation) when onnxruntime is installed, at batch 16 and 64;
2. end to end: ``embed_scenes`` on a real raster (NAIP 2009, 4 bands, RGB used),
   tiling + scaling + resize + forward + writing the store, with 0 and 1 worker
   processes;
3. naive: one patch at a time, opening the raster and running the model per patch.

    python benchmarks/bench_embed.py [--patches 512] [--input-size 224]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import record  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("RSCBIR_DATA", HERE.parents[1] / "shared" / "data"))
NAIP = DATA / "naip_timeseries" / "m_4709963_se_14_1_20090818.tif"


def rate(fn, items: int, repeat: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return items / best


def model_only(model, size: int, batches: list[int]) -> list[tuple[str, float]]:
    """img/s of the forward pass alone on already-scaled input."""
    from rscbir.models.runtime import forward_for

    out = []
    with torch.inference_mode():
        for batch in batches:
            x = torch.rand(batch, 3, size, size)
            model.to(memory_format=torch.contiguous_format)
            out.append((f"torch trunk, contiguous, batch {batch}", rate(lambda: model.backbone(x), batch)))
            model.to(memory_format=torch.channels_last)
            xc = x.contiguous(memory_format=torch.channels_last)
            out.append((f"torch trunk, channels_last, batch {batch}", rate(lambda: model.backbone(xc), batch)))
            out.append((f"torch channels_last, batch {batch}", rate(lambda: model(xc), batch)))
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return out
    start = time.perf_counter()
    onnx = forward_for(model, "onnx")
    onnx(torch.rand(1, 3, size, size))
    out.append(("onnxruntime: one-time export + session (s)", time.perf_counter() - start))
    for batch in batches:
        x = torch.rand(batch, 3, size, size)
        out.append((f"onnxruntime fp32, batch {batch}", rate(lambda: onnx(x), batch)))
    with torch.inference_mode():
        ref = forward_for(model, "torch")(x[:8])
    out.append(("onnxruntime vs torch: max abs difference", float((onnx(x[:8]) - ref).abs().max())))
    out.append(("onnxruntime int8 dynamic quantisation", int8_rate(model, size)))
    return out


def int8_rate(model, size: int) -> float:
    """ONNX Runtime with dynamic int8 weights (the CPU has AVX-512 VNNI)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    import onnxruntime as ort

    work = Path(tempfile.mkdtemp())
    try:
        x = torch.rand(16, 3, size, size)
        model.to(memory_format=torch.contiguous_format)
        torch.onnx.export(model, (x[:1],), str(work / "m.onnx"), input_names=["x"], output_names=["v"],
                          dynamic_axes={"x": {0: "n"}, "v": {0: "n"}}, dynamo=False)  # fmt: skip
        quantize_dynamic(str(work / "m.onnx"), str(work / "q.onnx"), weight_type=QuantType.QInt8)
        session = ort.InferenceSession(str(work / "q.onnx"), providers=["CPUExecutionProvider"])
        return rate(lambda: session.run(None, {"x": x.numpy()}), 16)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def end_to_end(model, stride: int, workers: int, runtime: str, batch: int) -> tuple[int, float]:
    from rscbir.embed import EmbedOptions, embed_scenes
    from rscbir.scene import Scene
    from rscbir.tiling import TilingConfig

    scene = Scene.open(NAIP, band_names=["R", "G", "B", "NIR"]).select(["R", "G", "B"])
    work = Path(tempfile.mkdtemp())
    try:
        start = time.perf_counter()
        store = embed_scenes([scene], work / "emb", model, TilingConfig(64, stride),
                             options=EmbedOptions(batch_size=batch, workers=workers, runtime=runtime))  # fmt: skip
        return len(store.vectors), time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)


def naive(model, stride: int, limit: int) -> tuple[int, float]:
    """One patch at a time: open, read, scale, forward; what a first script does."""
    import rasterio
    from rasterio.windows import Window

    start = time.perf_counter()
    count = 0
    with rasterio.open(NAIP) as ds:
        rows, cols = (ds.height - 64) // stride + 1, (ds.width - 64) // stride + 1
    with torch.inference_mode():
        for r in range(rows):
            for c in range(cols):
                with rasterio.open(NAIP) as ds:
                    patch = ds.read([1, 2, 3], window=Window(c * stride, r * stride, 64, 64)).astype(np.float32) / 255
                model(torch.from_numpy(patch)[None])
                count += 1
                if count >= limit:
                    return count, time.perf_counter() - start
    return count, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--stride", type=int, default=16, help="patch stride on NAIP (64 px patches); 16 gives ~2,300 patches")
    parser.add_argument("--naive-limit", type=int, default=128)
    args = parser.parse_args()
    if not NAIP.exists():
        sys.exit(f"{NAIP} not found; set RSCBIR_DATA to the shared data folder")

    from rscbir.models.load import configure_threads, load_feature_model

    configure_threads()
    model = load_feature_model(["R", "G", "B"], input_size=args.input_size)
    rows = []
    for name, value in model_only(model, args.input_size, [16, 64]):
        rows.append(("model only", name, value))
        print(f"model only  {name:<46} {value:8.2f}", flush=True)
    for runtime in ("torch", "onnx"):
        for workers in (0, 1):
            count, seconds = end_to_end(model, args.stride, workers, runtime, args.batch)
            rows.append(("end to end", f"{runtime}, batch {args.batch}, {workers} worker(s), {count} patches", count / seconds))
            print(f"end to end  {runtime} workers={workers} {count} patches {count / seconds:8.2f} patches/s", flush=True)
    count, seconds = naive(model, args.stride, args.naive_limit)
    rows.append(("naive", f"torch, one patch at a time, {count} patches", count / seconds))
    print(f"naive       {count} patches {count / seconds:8.2f} patches/s", flush=True)

    def best(kind: str, word: str) -> float:
        return max(v for k, n, v in rows if k == kind and n.startswith(word) and "difference" not in n and "export" not in n)

    naive_rate = rows[-1][2]
    summary = [
        f"End to end / model only, same runtime and batch {args.batch}: torch "
        f"**{best('end to end', 'torch') / max(v for k, n, v in rows if n == f'torch channels_last, batch {args.batch}'):.2f}**, "
        f"ONNX Runtime **{best('end to end', 'onnx') / max(v for k, n, v in rows if n == f'onnxruntime fp32, batch {args.batch}'):.2f}**. "
        f"End to end (best) / naive: **{max(best('end to end', 'torch'), best('end to end', 'onnx')) / naive_rate:.1f}x**.",
    ]
    lines = [
        f"\n## Embedding speed ({dt.date.today().isoformat()})\n",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}. "
        f"Command: `python benchmarks/bench_embed.py --input-size {args.input_size} --batch {args.batch} --stride {args.stride}`. "
        f"Model: efficientnet_lite0 (ImageNet), avg pooling, 64 px patches resized to {args.input_size} px. "
        "End to end = tiling the real NAIP 2009 scene + scaling + resize + forward + writing the store. "
        "Model-only rows are img/s (best of 3) on 224 px input; end-to-end and naive rows are patches/s.\n",
        "| kind | variant | img/s |",
        "|---|---|---:|",
        *(f"| {kind} | {name} | {value:.2e} |" if "difference" in name else f"| {kind} | {name} | {value:.2f} |" if "export" in name else f"| {kind} | {name} | {value:.1f} |" for kind, name, value in rows),
        "",
        *summary,
    ]
    record("\n".join(lines), "embed", [dict(zip(("kind", "name", "value"), r)) for r in rows])
    print(summary[0])


if __name__ == "__main__":
    main()

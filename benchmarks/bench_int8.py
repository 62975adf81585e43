"""int8 inference for the default model: static QDQ quantisation (ONNX Runtime) against fp32, side by side.

The default search model (efficientnet_lite0, grid pooling of the last 4 stages) is exported to ONNX once and
quantised statically (QDQ, per-channel int8 weights, uint8 activations calibrated on 64 real RSSCN7 images),
in several variants. Each variant is judged on what a user gets: throughput at batch 64 on 224 px input, the
cosine of its vectors to the fp32 vectors on 256 other RSSCN7 images, and the RSSCN7 mAP of all 700 images
(raw vectors, no PCA, so the quantisation is the only difference).

    python benchmarks/bench_int8.py
"""

from __future__ import annotations

import datetime as dt
import os
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


def main() -> None:
    import onnx
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    from rscbir.defaults import DEFAULT_POOLING
    from rscbir.images import load_image
    from rscbir.metrics import mean_average_precision
    from rscbir.models.load import model_for_images
    from rscbir.models.options import ModelOptions

    paths = sorted((DATA / "rsscn7").glob("*/*.jpg"))
    if len(paths) != 700:
        sys.exit(f"needs the 700 RSSCN7 images in {DATA / 'rsscn7'}")
    labels = np.array([p.parent.name for p in paths])
    model = model_for_images(ModelOptions(pooling=DEFAULT_POOLING)).eval()
    with torch.inference_mode():
        images = torch.cat([model.resize(torch.stack([load_image(p) for p in paths[i : i + 50]])) for i in range(0, 700, 50)])
    order = np.random.default_rng(0).permutation(len(paths))
    calibration, held_out = images[order[:64]], images[order[64:320]]

    work = Path(tempfile.mkdtemp(prefix="rscbir-int8-"))
    try:
        fp32 = work / "fp32.onnx"
        torch.onnx.export(model, (images[:1],), str(fp32), input_names=["x"], output_names=["v"],
                          dynamic_axes={"x": {0: "n"}, "v": {0: "n"}}, dynamo=False)  # fmt: skip
        shutil.copy(fp32, work / "pre.onnx")  # quant_pre_process folds the grid pooling into a wrong output size (2,240-d)
        graph = onnx.load(str(work / "pre.onnx")).graph
        convs = [n for n in graph.node if n.op_type == "Conv"]
        depthwise = [n.name for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)]

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter([{"x": calibration[i : i + 8].numpy()} for i in range(0, len(calibration), 8)])

            def get_next(self):
                return next(self.batches, None)

        conv = {"op_types_to_quantize": ["Conv"]}  # every op quantised breaks grid pooling's Reshape (2,240-d output, not 7,616)
        variants = {
            "convolutions, MinMax": conv,
            "convolutions, entropy": {**conv, "calibrate_method": CalibrationMethod.Entropy},
            "convolutions but the first": {**conv, "nodes_to_exclude": [convs[0].name]},
            "convolutions but the depthwise ones": {**conv, "nodes_to_exclude": depthwise},
        }
        models = {"fp32 (default)": fp32}
        for name, extra in variants.items():
            target = work / f"{len(models)}.onnx"
            quantize_static(str(work / "pre.onnx"), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            **{"calibrate_method": CalibrationMethod.MinMax, **extra})  # fmt: skip
            models[name] = target

        options = ort.SessionOptions()
        options.intra_op_num_threads = os.cpu_count() or 1
        options.log_severity_level = 3
        sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]) for name, path in models.items()}

        def vectors(session, x) -> np.ndarray:
            return np.concatenate([session.run(None, {"x": x[i : i + 64].numpy()})[0] for i in range(0, len(x), 64)])

        def rate(session) -> float:
            x = {"x": held_out[:64].numpy()}
            session.run(None, x)
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                session.run(None, x)
                best = min(best, time.perf_counter() - start)
            return 64 / best

        reference = vectors(sessions["fp32 (default)"], held_out)
        rows = []
        for name, session in sessions.items():
            v = vectors(session, held_out)
            cosine = (v * reference).sum(1) / np.linalg.norm(v, axis=1) / np.linalg.norm(reference, axis=1)
            rows.append({"variant": name, "img_s": rate(session), "cos_mean": float(cosine.mean()), "cos_min": float(cosine.min()),
                         "map": mean_average_precision(vectors(session, images), labels)})  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = rows[0]
    lines = [
        f"## int8 inference, static QDQ ({dt.date.today().isoformat()})\n",
        f"Machine: {os.cpu_count()} cores (AVX-512 VNNI, AMX), onnxruntime {ort.__version__}. Command: `python benchmarks/bench_int8.py`. "
        "Model: the default search model (efficientnet_lite0 ImageNet, grid pooling, 4 stages), 224 px input. "
        "Static QDQ, per-channel int8 weights, uint8 activations calibrated on 64 RSSCN7 images; cosine to fp32 on 256 "
        "other images; mAP of all 700 RSSCN7 images on the raw vectors (no PCA). Quantising every op, not only the "
        "convolutions, breaks the grid pooling (the graph then answers 2,240-d vectors); on the avg-pooled model it ran "
        "1.21x fp32 at a mean cosine of 0.91 (exploration, same calibration).\n",
        "| variant | img/s (batch 64) | vs fp32 | cosine to fp32, mean / min | RSSCN7 mAP |",
        "|---|---:|---:|---:|---:|",
        *(f"| {r['variant']} | {r['img_s']:.1f} | {r['img_s'] / base['img_s']:.2f}x | {r['cos_mean']:.4f} / {r['cos_min']:.4f} | "
          f"{r['map']:.3f} |" for r in rows),  # fmt: skip
    ]
    record("\n".join(lines), "int8", rows)


if __name__ == "__main__":
    main()

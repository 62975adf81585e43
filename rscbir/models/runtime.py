"""Where the forward pass runs: PyTorch, or ONNX Runtime when it is faster.

On the project's 2-core CPU, ONNX Runtime runs the default EfficientNet-Lite0
about 2.6x faster than PyTorch channels_last (134 vs 52 img/s at batch 64, see
benchmarks/results.md) with vectors equal to 2e-6. The ONNX graph is exported
from the very same :class:`FeatureModel` (resize, normalisation, trunk,
pooling, head, L2) once per input shape into a temporary folder. Upsampling
patches to the input size runs inside the graph; downsampling stays in torch
(antialiased bilinear has no ONNX operator). ``embed`` and ``index build`` on the
CPU keep the graph in the cache instead and run without torch
(:mod:`rscbir.models.onnx_cache`); this module serves the torch-built model.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import torch

from rscbir.errors import ModelError
from rscbir.models.features import FeatureModel
from rscbir.models.ort import onnxruntime_available, ort_session
from rscbir.modes import Device, Runtime

log = logging.getLogger(__name__)




class OnnxRuntimeModel:
    """Callable like the FeatureModel it was exported from: (N, bands, H, W) -> (N, dim)."""

    def __init__(self, model: FeatureModel, threads: int | None = None) -> None:
        import onnxruntime  # noqa: F401  (fail early when absent)

        self.model = model.eval()
        self.threads = threads or os.cpu_count() or 1
        self._sessions: dict[tuple[int, ...], object] = {}
        self._folder = Path(tempfile.mkdtemp(prefix="rscbir-onnx-"))

    def _session(self, shape: tuple[int, ...]):
        path = self._folder / f"model_{'x'.join(map(str, shape))}.onnx"
        example = torch.zeros((1, *shape))
        self.model.to(memory_format=torch.contiguous_format)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                self.model, (example,), str(path), input_names=["x"], output_names=["v"],
                dynamic_axes={"x": {0: "n"}, "v": {0: "n"}}, dynamo=False,
            )  # fmt: skip
        session = ort_session(path, self.threads)
        log.info("exported %s input %s to ONNX Runtime", self.model.backbone.name, shape)
        return session

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        size = self.model.input_spec.size
        if size and x.shape[-1] > size:
            with torch.inference_mode():
                x = self.model.resize(x)  # downsampling is antialiased in torch: no ONNX operator for it
        shape = tuple(x.shape[1:])  # upsampling stays in the graph (bilinear Resize, 5-10 % faster)
        if shape not in self._sessions:
            self._sessions[shape] = self._session(shape)
        array = x.contiguous().numpy()
        return torch.from_numpy(self._sessions[shape].run(None, {"x": array})[0])

    def close(self) -> None:
        folder = getattr(self, "_folder", None)  # absent when __init__ failed (no temporary folder could be made)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def __del__(self) -> None:
        self.close()


def resolve_device(device: Device | str = Device.AUTO) -> Device:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without one is an error."""
    try:
        device = Device(device)
    except ValueError:
        raise ModelError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if device is Device.AUTO:
        return Device.CUDA if torch.cuda.is_available() else Device.CPU
    if device is Device.CUDA and not torch.cuda.is_available():
        raise ModelError("--device cuda: torch sees no CUDA GPU here; use --device cpu or auto")
    return device


def forward_for(model: FeatureModel, runtime: Runtime | str = Runtime.AUTO, device: Device | str = Device.AUTO,
                threads: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:  # fmt: skip
    """A callable that embeds batches with ``model`` on the chosen runtime and device.

    On a GPU the forward pass runs in PyTorch (ONNX Runtime here is the CPU build);
    on the CPU ``auto`` picks ONNX Runtime when installed.
    """
    runtime = Runtime(runtime)
    if resolve_device(device) is Device.CUDA:
        gpu = model.eval().to("cuda", memory_format=torch.channels_last)

        def forward_gpu(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return gpu(x.to("cuda", non_blocking=True)).float().cpu()

        return forward_gpu
    if runtime is Runtime.AUTO:
        runtime = Runtime.ONNX if onnxruntime_available() else Runtime.TORCH
    if runtime is Runtime.ONNX:
        if not onnxruntime_available():
            raise ModelError("--runtime onnx needs onnxruntime: `pip install onnxruntime onnx`, or use --runtime torch")
        return OnnxRuntimeModel(model, threads)
    model.eval().to(memory_format=torch.channels_last)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x.contiguous(memory_format=torch.channels_last))

    return forward

"""CNN evidence of change: per-stage feature maps of both dates compared location by location (torch, and ONNX
Runtime for the pair distances on the CPU)."""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from rscbir.models.features import FeatureModel, stage_maps
from rscbir.models.ort import onnxruntime_available, ort_session
from rscbir.modes import Runtime

log = logging.getLogger(__name__)


class PairDistances(nn.Module):
    """The distances of :func:`cnn_distances` as one module of two prepared inputs, so that it exports to ONNX:
    (cosine, multilayer, dense) per pair and, with ``pixel_maps``, the (n, h, w) per-location map."""

    def __init__(self, model: FeatureModel, pixel_maps: bool) -> None:
        super().__init__()
        self.model, self.pixel_maps = model, pixel_maps

    def forward(self, xb: torch.Tensor, xa: torch.Tensor) -> tuple[torch.Tensor, ...]:
        size = xb.shape[-2:]
        mb, ma = stage_maps(self.model, xb), stage_maps(self.model, xa)
        pooled = torch.stack([1 - F.cosine_similarity(b.mean(dim=(2, 3)), a.mean(dim=(2, 3)), dim=1) for b, a in zip(mb, ma)], dim=1)
        located = [1 - F.cosine_similarity(b, a, dim=1, eps=1e-6) for b, a in zip(mb, ma)]
        dense = torch.stack([d.mean(dim=(1, 2)) for d in located], dim=1)
        out = (pooled[:, -1], pooled.mean(dim=1), dense.mean(dim=1))
        if self.pixel_maps:
            resized = [F.interpolate(d[:, None], size=size, mode="bilinear", align_corners=False)[:, 0] for d in located]
            out = (*out, torch.stack(resized).mean(dim=0))
        return out


NAMES = ("cosine", "multilayer", "dense", "dense_map")


def cnn_distances(model: FeatureModel, before: np.ndarray, after: np.ndarray, scale_before, scale_after,
                  pixel_maps: bool = False) -> dict[str, np.ndarray]:  # fmt: skip
    """Per patch pair: final-stage pooled cosine distance (``cosine``), its mean over stages
    (``multilayer``) and the per-location distance averaged over locations and stages (``dense``).

    With ``pixel_maps`` also ``dense_map``: (n, h, w) per-location distances of every stage
    resized to the patch's pixels and averaged, a score at sub-patch resolution."""
    xb = torch.from_numpy(scale_before(before))
    xa = torch.from_numpy(scale_after(after))
    with torch.inference_mode():
        out = PairDistances(model, pixel_maps)(xb, xa)
    return {name: value.numpy() for name, value in zip(NAMES, out)}


class OnnxPairDistances:
    """:func:`cnn_distances` run by ONNX Runtime: the graph of :class:`PairDistances` is exported once per patch
    shape through a temporary file (a 2k x 2k NAIP pair in 32 s against torch's 48 s; distances equal to 1e-4)."""

    def __init__(self, model: FeatureModel, pixel_maps: bool, threads: int | None = None) -> None:
        self.module = PairDistances(model.eval(), pixel_maps)
        self.pixel_maps, self.threads = pixel_maps, threads
        self._sessions: dict[tuple[int, ...], object] = {}

    def __call__(self, model: FeatureModel, before: np.ndarray, after: np.ndarray, scale_before, scale_after,
                 pixel_maps: bool = False) -> dict[str, np.ndarray]:  # fmt: skip
        size = model.input_spec.size
        if size and before.shape[-1] > size:  # antialiased downsampling has no ONNX operator: torch scores these
            return cnn_distances(model, before, after, scale_before, scale_after, pixel_maps)
        xb = torch.from_numpy(scale_before(before))
        xa = torch.from_numpy(scale_after(after))
        shape = tuple(xb.shape[1:])
        if shape not in self._sessions:
            self._sessions[shape] = self._session(shape)
        out = self._sessions[shape].run(None, {"xb": xb.contiguous().numpy(), "xa": xa.contiguous().numpy()})
        return dict(zip(NAMES, out))

    def _session(self, shape: tuple[int, ...]):
        """A session of the graph for ``shape``, exported to a temporary file that goes once the session has read it
        (nothing is left in TMPDIR, even by a Dask worker that is killed)."""
        with tempfile.TemporaryDirectory(prefix="rscbir-onnx-pair-") as folder:
            path = export_pair_graph(self.module.model, shape, Path(folder) / f"pair_{'x'.join(map(str, shape))}.onnx", self.pixel_maps)
            return ort_session(path, self.threads or torch.get_num_threads())

    def close(self) -> None:
        self._sessions.clear()


def export_pair_graph(model: FeatureModel, shape: tuple[int, ...], path: Path, pixel_maps: bool) -> Path:
    """Write the ONNX graph of :class:`PairDistances` for patches of ``shape`` (bands, h, w), any batch, to ``path``."""
    module = PairDistances(model.eval(), pixel_maps)
    example = torch.zeros((2, *shape))
    names = list(NAMES if pixel_maps else NAMES[:3])
    model.to(memory_format=torch.contiguous_format)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example, example), str(path), input_names=["xb", "xa"], output_names=names,
                          dynamic_axes={"xb": {0: "n"}, "xa": {0: "n"}, **{n: {0: "n"} for n in names}}, dynamo=False)  # fmt: skip
    log.info("exported the pair distances of %s, input %s, to ONNX", model.backbone.name, shape)
    return path


def distances_for(model: FeatureModel, pixel_maps: bool, runtime: Runtime | str = Runtime.AUTO):
    """What scores patch pairs with ``model``: ONNX Runtime on the CPU when it is installed and ``runtime`` is
    not ``torch``, else torch (:func:`cnn_distances`)."""
    runtime = Runtime(runtime)
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    if on_cpu and runtime is not Runtime.TORCH and onnxruntime_available():
        return OnnxPairDistances(model, pixel_maps)
    return cnn_distances


def stage_differences(model: FeatureModel, before: np.ndarray, after: np.ndarray, scale_before, scale_after,
                      directions: int) -> np.ndarray:  # fmt: skip
    """Per-pixel CNN evidence of change for patch pairs, (n, C, h, w) float32 at the patches' pixels.

    For every stage, the per-location cosine distance of the two dates (what ``dense`` averages); for the
    first ``directions`` stages also the difference of the two dates' unit feature vectors, channel by channel:
    not only how much a place changed but in which direction (vegetation to roof is not water to soil), which a
    model taught by labels or marks can tell apart."""
    xb = torch.from_numpy(scale_before(before))
    xa = torch.from_numpy(scale_after(after))
    size = before.shape[-2:]
    with torch.inference_mode():
        parts = []
        for k, (b, a) in enumerate(zip(stage_maps(model, xb), stage_maps(model, xa))):
            ub, ua = F.normalize(b, dim=1, eps=1e-6), F.normalize(a, dim=1, eps=1e-6)
            located = [0.5 * ((ua - ub) ** 2).sum(dim=1, keepdim=True)]  # = 1 - cosine
            if k < directions:
                located.append(ua - ub)
            parts.append(F.interpolate(torch.cat(located, dim=1), size=size, mode="bilinear", align_corners=False))
        return torch.cat(parts, dim=1).numpy()
__all__ = ["NAMES", "OnnxPairDistances", "PairDistances", "cnn_distances", "distances_for", "export_pair_graph", "stage_differences"]

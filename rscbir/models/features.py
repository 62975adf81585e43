"""From scaled bands to one L2-normalised vector per patch.

:class:`FeatureModel` owns the whole transform so that every caller embeds the
same way: band mapping, resize, per-band normalisation (the backbone's ImageNet
mean/std after per-band scaling to [0, 1]), the pretrained trunk, global
average or GeM pooling, an optional learned head, and L2 normalisation.

Inputs with more than three bands (all 13 Sentinel-2 bands, RGB + NIR) go
through a first convolution *inflated* from the RGB filters: bands mapped to
R, G, B keep those filters, the others get their mean, and all are scaled by
3 / bands so activations keep their magnitude.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rscbir.errors import ModelError
from rscbir.models.config import ModelConfig
from rscbir.models.backbones import Backbone, first_conv
from rscbir.modes import Pooling

# Band names recognised as (red, green, blue) when no preset says otherwise.
# Generic names B1..Bn are deliberately absent: their meaning depends on the file.
RGB_NAMES = [("R", "G", "B"), ("red", "green", "blue"), ("B04", "B03", "B02")]


@dataclass(frozen=True)
class InputSpec:
    """Which scene bands a model reads, and which of them are red, green, blue.

    ``bands`` are scene band names in model-input order; ``rgb`` their positions
    (into ``bands``) that feed the pretrained R, G, B filters.
    """

    bands: tuple[str, ...]
    rgb: tuple[int, int, int] = (0, 1, 2)
    size: int | None = 224  # patches are resized to size x size; None keeps them

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_input(
    scene_bands: Sequence[str],
    rgb: Sequence[str] | None = None,
    all_bands: bool = False,
    size: int | None = 224,
) -> InputSpec:
    """The model input for a scene with ``scene_bands``.

    ``rgb`` names the scene bands to treat as red, green, blue (from a preset);
    without it a 3-band scene is taken as RGB in order and other scenes must
    carry recognisable names (R/G/B, red/green/blue, Sentinel-2 B04/B03/B02).
    ``all_bands`` feeds every scene band through an inflated first convolution.
    """
    names = list(scene_bands)
    lower = [n.lower() for n in names]
    if rgb is None:
        if len(names) == 3 and not all_bands:
            return InputSpec(tuple(names), (0, 1, 2), size)
        for candidate in RGB_NAMES:
            if all(c.lower() in lower for c in candidate):
                rgb = candidate
                break
        else:
            raise ModelError(
                f"the model takes red, green and blue bands but the scene has {len(names)} bands "
                f"({', '.join(names)}) without recognisable RGB names; pass --preset (naip, sentinel2, landsat, rgb) "
                "or --bands with three bands in R,G,B order"
            )
    missing = [b for b in rgb if b.lower() not in lower]
    if missing:
        raise ModelError(f"RGB bands {missing} are not in the scene (bands: {', '.join(names)})")
    if all_bands:
        positions = tuple(lower.index(b.lower()) for b in rgb)
        return InputSpec(tuple(names), positions, size)  # type: ignore[arg-type]
    return InputSpec(tuple(names[lower.index(b.lower())] for b in rgb), (0, 1, 2), size)


def inflate_first_conv(conv: nn.Conv2d, n_bands: int, rgb: Sequence[int]) -> nn.Conv2d:
    """A copy of ``conv`` that takes ``n_bands`` inputs, built from its RGB filters.

    Works for ``nn.Conv2d`` subclasses (timm's same-padding convolution) because
    the copy keeps the class and only its weight changes.
    """
    weight = conv.weight.detach()
    if weight.shape[1] != 3:
        raise ModelError(f"cannot inflate a first convolution with {weight.shape[1]} inputs; expected 3 (RGB)")
    inflated = weight.mean(dim=1, keepdim=True).repeat(1, n_bands, 1, 1)
    for channel, position in enumerate(rgb):
        inflated[:, position] = weight[:, channel]
    new = copy.deepcopy(conv)
    new.in_channels = n_bands
    new.weight = nn.Parameter(inflated * 3.0 / n_bands)
    return new


class GeM(nn.Module):
    """Generalised-mean pooling with a fixed exponent."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p, self.eps = p, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(self.p), 1).pow(1.0 / self.p).flatten(1)


class GridPool(nn.Module):
    """Average over each quarter of a feature map (2 x 2 cells, as adaptive pooling splits odd sizes), flattened.

    Written as an average pool with kernel ceil(n / 2) and stride floor(n / 2) (the same cells) because ONNX
    cannot export adaptive pooling to a size that does not divide the input.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if h < 2 or w < 2:  # a one-pixel map: every cell is that pixel
            x = F.interpolate(x, size=(max(h, 2), max(w, 2)), mode="nearest")
            h, w = max(h, 2), max(w, 2)
        return F.avg_pool2d(x, kernel_size=(-(-h // 2), -(-w // 2)), stride=(h // 2, w // 2)).flatten(1)


class FeatureModel(nn.Module):
    """Scaled bands (N, bands, H, W) in [0, 1] -> L2-normalised vectors (N, dim).

    ``stages`` > 1 pools the last ``stages`` stage outputs (mid-level texture as
    well as the last layer's semantics), L2-normalises each and concatenates
    them; ``views`` > 1 averages the pooled features of that many flips and
    90-degree rotations (each costs one more forward pass).

    ``config`` (set by :func:`rscbir.models.load.load_feature_model`) records how
    the model was built, so a model and its provenance never travel apart.
    ``trained_stages`` counts the last trunk stages that fine-tuning changed.
    """

    def __init__(
        self,
        backbone: Backbone,
        input_spec: InputSpec,
        pooling: Pooling | str = Pooling.AVG,
        head: nn.Module | None = None,
        stages: int = 1,
        views: int = 1,
    ) -> None:
        super().__init__()
        if stages < 1 or views not in (1, 2, 4, 8):
            raise ModelError(f"stages must be >= 1 (got {stages}) and views one of 1, 2, 4, 8 (got {views})")
        self.backbone = backbone
        self.input_spec = input_spec
        self.pooling = Pooling(pooling)
        pools = {Pooling.GEM: GeM, Pooling.GRID: GridPool}
        self.pool = pools[self.pooling]() if self.pooling in pools else nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.head = head
        self.stages, self.views = int(stages), int(views)
        self.config: ModelConfig | None = None
        self.trained_stages = 0
        n_bands = len(input_spec.bands)
        if n_bands != 3 or tuple(input_spec.rgb) != (0, 1, 2):
            parent, attr = first_conv(backbone)
            setattr(parent, attr, inflate_first_conv(getattr(parent, attr), n_bands, input_spec.rgb))
        mean = torch.full((n_bands,), sum(backbone.weights.mean) / 3)
        std = torch.full((n_bands,), sum(backbone.weights.std) / 3)
        for channel, position in enumerate(input_spec.rgb):
            mean[position] = backbone.weights.mean[channel]
            std[position] = backbone.weights.std[channel]
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1), persistent=False)

        self.pooled_dim = self.backbone.channels * (4 if self.pooling is Pooling.GRID else 1)
        if self.stages > 1:
            training, _ = backbone.training, backbone.eval()
            with torch.no_grad():
                probe = self._stage_outputs(self.prepare(torch.zeros(1, n_bands, 64, 64)))
            backbone.train(training)
            if len(probe) < self.stages:
                raise ModelError(f"{backbone.name} has {len(probe)} stages; --stages {self.stages} asks for more")
            self.pooled_dim = sum(int(m.shape[1]) for m in probe[-self.stages :]) * (4 if self.pooling is Pooling.GRID else 1)

    @property
    def dim(self) -> int:
        if self.head is not None:
            return int(self.head.out_features)
        return self.pooled_dim

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """Check the band count and resize to the model's input size."""
        if x.shape[1] != len(self.input_spec.bands):
            raise ModelError(
                f"model takes {len(self.input_spec.bands)} bands ({', '.join(self.input_spec.bands)}), got {x.shape[1]}"
            )
        size = self.input_spec.size
        if size and x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > size)
        return x

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Resize and normalise scaled bands into backbone input."""
        x = (self.resize(x) - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features before any head, not normalised overall (N, pooled_dim)."""
        x = self.prepare(x)
        if self.views == 1:
            return self._pool_stages(x)
        return torch.stack([self._pool_stages(dihedral(x, k)) for k in range(self.views)]).mean(dim=0)

    def _pool_stages(self, x: torch.Tensor) -> torch.Tensor:
        if self.stages == 1:
            return self.pool(self.backbone(x))
        maps = self._stage_outputs(x)[-self.stages :]
        return torch.cat([F.normalize(self.pool(m), dim=1) for m in maps], dim=1)

    def _stage_outputs(self, h: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps after every trunk stage for prepared input ``h``."""
        maps = []
        for stage in trunk_stages(self):
            h = stage(h)
            if h.ndim == 4 and not isinstance(stage, nn.BatchNorm2d):
                maps.append(h)
        maps[-1] = h  # in timm the last conv is followed by BatchNorm+activation (bn2): use that output
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pooled(x)
        if self.head is not None:
            features = self.head(features)
        return F.normalize(features, dim=1)


def trunk_stages(model: FeatureModel) -> list[nn.Module]:
    """The trunk's stages, shallow to deep (for unfreezing and per-stage features)."""
    trunk = model.backbone.trunk
    inner = getattr(trunk, "model", None)
    if inner is not None and hasattr(inner, "blocks"):  # timm EfficientNet
        return [inner.conv_stem, inner.bn1, *inner.blocks, inner.conv_head, inner.bn2]
    return list(trunk.children())


def stage_maps(model: FeatureModel, x: torch.Tensor) -> list[torch.Tensor]:
    """Feature maps (N, C_i, h_i, w_i) after every trunk stage, for scaled bands ``x``."""
    return model._stage_outputs(model.prepare(x))


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 flips/90-degree rotations of a (..., H, W) tensor (k in 0..7).

    Equal to ``torch.rot90(x, k % 4)`` after a horizontal flip for k >= 4, written
    with transpose and flip because ONNX has no rot90 operator.
    """
    if k >= 4:
        x = x.flip(-1)
    k %= 4
    if k == 1:
        return x.transpose(-2, -1).flip(-2)
    if k == 2:
        return x.flip(-2).flip(-1)
    if k == 3:
        return x.transpose(-2, -1).flip(-1)
    return x

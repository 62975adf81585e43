"""Build the feature model that turns patches into vectors, from options or a checkpoint.

Every model comes back with its :class:`~rscbir.models.features.ModelConfig`
attached (``model.config``); the same config is written next to every
embedding store and index, so a later query or append embeds exactly the same
way, and a different model is recognised by its fingerprint.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from rscbir.errors import ModelError, ModelMismatchError, WeightsError
from rscbir.models.backbones import BACKBONES, DEFAULT_BACKBONE, file_sha256, load_backbone
from rscbir.models.checkpoint import read_checkpoint
from rscbir.models.features import FeatureModel, InputSpec, ModelConfig, resolve_input
from rscbir.modes import Device, Pooling, Runtime

# Mid-level features: the last four stage outputs of EfficientNet-Lite0 (112, 192, 320 and 1280 channels) pooled
# and concatenated lift RSSCN7 mAP from 0.447 to 0.496 on the design half (benchmarks/results.md).
DEFAULT_STAGES = 4

__all__ = ["ModelConfig", "ModelOptions", "load_feature_model", "model_for_scenes", "model_from_config", "configure_threads"]


@dataclass(frozen=True)
class ModelOptions:
    """Which model to build (the CLI's model options); ``runtime``/``device`` say where it runs."""

    backbone: str | None = None
    weights: str | None = None
    all_bands: bool = False
    pooling: Pooling = Pooling.AVG
    input_size: int | None = 224  # 0 or None: keep the patch size
    runtime: Runtime = Runtime.AUTO
    device: Device = Device.AUTO
    stages: int = DEFAULT_STAGES
    views: int = 1

    def for_scenes(self, scenes: Sequence, preset=None) -> tuple[FeatureModel, list]:
        """The model for these scenes and the scenes cut to its bands (see :func:`model_for_scenes`)."""
        return model_for_scenes(scenes, preset, self.backbone, self.weights, self.all_bands, self.input_size or None, self.pooling,
                                self.stages, self.views)  # fmt: skip

    def for_rgb_images(self) -> FeatureModel:
        """The model for plain RGB image files (scene sets, chips)."""
        return load_feature_model(["R", "G", "B"], self.backbone, self.weights, input_size=self.input_size or None, pooling=self.pooling,
                                  stages=self.stages, views=self.views)  # fmt: skip


def load_feature_model(
    scene_bands: Sequence[str],
    backbone: str | None = None,
    weights: str | os.PathLike | None = None,
    rgb: Sequence[str] | None = None,
    all_bands: bool = False,
    input_size: int | None = 224,
    pooling: Pooling | str = Pooling.AVG,
    stages: int = DEFAULT_STAGES,
    views: int = 1,
) -> FeatureModel:
    """The feature model (with ``model.config``) for a scene with ``scene_bands``.

    ``weights`` may be a plain state dict for ``backbone`` or a checkpoint
    written by ``rscbir finetune`` (which then fixes backbone, head, bands and
    pooling). Raises :class:`ModelError` when the scene lacks the bands the
    model needs.
    """
    checkpoint = read_checkpoint(weights) if weights is not None else None
    if checkpoint is None:
        model = _pretrained(scene_bands, backbone, weights, rgb, all_bands, input_size, pooling, stages, views)
        ckpt_path = ckpt_sha = None
    else:
        model = _from_checkpoint(checkpoint, scene_bands, backbone, weights)
        ckpt_path, ckpt_sha = str(weights), file_sha256(weights)  # type: ignore[arg-type]
    for p in model.parameters():
        p.requires_grad_(False)
    model.config = ModelConfig(
        backbone=model.backbone.name,
        weights=model.backbone.weights.source,
        weights_sha256=model.backbone.weights.sha256,
        pooling=model.pooling.value,
        input_bands=tuple(model.input_spec.bands),
        rgb=tuple(model.input_spec.rgb),
        input_size=model.input_spec.size,
        dim=model.dim,
        checkpoint=ckpt_path,
        checkpoint_sha256=ckpt_sha,
        stages=model.stages,
        views=model.views,
    )
    return model


def _pretrained(scene_bands, backbone, weights, rgb, all_bands, input_size, pooling, stages, views) -> FeatureModel:
    trunk = load_backbone(backbone or DEFAULT_BACKBONE, weights)
    spec = resolve_input(scene_bands, rgb, all_bands, input_size)
    return FeatureModel(trunk, spec, pooling, stages=stages, views=views).eval()


def _from_checkpoint(checkpoint: dict, scene_bands, backbone, weights) -> FeatureModel:
    if backbone and backbone != checkpoint["backbone"]:
        raise ModelError(f"{weights}: checkpoint was trained on {checkpoint['backbone']}, not {backbone}")
    trunk = load_backbone(checkpoint["backbone"])
    if checkpoint["trunk"] is None and trunk.weights.sha256 != checkpoint["backbone_sha256"]:
        raise ModelError(f"{weights}: checkpoint was trained on other {checkpoint['backbone']} weights than those installed")
    saved = checkpoint["input_spec"]
    missing = [b for b in saved["bands"] if b not in scene_bands]
    if missing:
        raise ModelError(
            f"{weights}: model was trained on bands {', '.join(saved['bands'])}; the scene lacks {', '.join(missing)} "
            f"(it has {', '.join(scene_bands)}); pass --preset or --bands to name them"
        )
    spec = InputSpec(tuple(saved["bands"]), tuple(saved["rgb"]), saved["size"])  # type: ignore[arg-type]
    head = nn.Linear(checkpoint["head_in"], checkpoint["head_dim"])
    head.load_state_dict(checkpoint["head"])
    model = FeatureModel(trunk, spec, checkpoint["pooling"], head.eval(), checkpoint.get("stages", 1), checkpoint.get("views", 1))
    if checkpoint["trunk"] is not None:
        model.backbone.trunk.load_state_dict(checkpoint["trunk"])
        model.trained_stages = int(checkpoint.get("trained_stages", 1))
    return model.eval()


def model_for_scenes(
    scenes: Sequence,
    preset=None,
    backbone: str | None = None,
    weights: str | os.PathLike | None = None,
    all_bands: bool = False,
    input_size: int | None = 224,
    pooling: Pooling | str = Pooling.AVG,
    stages: int = DEFAULT_STAGES,
    views: int = 1,
) -> tuple[FeatureModel, list]:
    """The feature model for these scenes, and the scenes cut to the bands it reads.

    ``preset`` (a :class:`rscbir.presets.Preset`) names the RGB bands and, with
    ``all_bands``, the bands fed through the inflated first convolution.
    """
    bands = scenes[0].band_names
    if all_bands and preset is not None and preset.all_bands:
        bands = [b for b in preset.all_bands if b in bands]
    model = load_feature_model(
        bands, backbone=backbone, weights=weights, rgb=preset.rgb if preset is not None else None,
        all_bands=all_bands, input_size=input_size, pooling=pooling, stages=stages, views=views,
    )  # fmt: skip
    return model, [s.select(list(model.config.input_bands)) for s in scenes]


def model_from_config(config: ModelConfig) -> FeatureModel:
    """The feature model an index or store recorded, verified by weights hash (cached per config).

    The installed default weights are used when their hash matches (the venv
    may have moved); otherwise the recorded file, which must still hash the same.
    """
    return _model_from_config(json.dumps(config.to_dict(), sort_keys=True))


@functools.lru_cache(maxsize=4)
def _model_from_config(doc: str) -> FeatureModel:
    config = ModelConfig.from_dict(json.loads(doc))
    bands = list(config.input_bands)
    rgb_names = [bands[i] for i in config.rgb]
    all_bands = len(bands) != 3 or tuple(config.rgb) != (0, 1, 2)
    if config.checkpoint:
        if not Path(config.checkpoint).is_file() or file_sha256(config.checkpoint) != config.checkpoint_sha256:
            raise ModelMismatchError(f"the fine-tuned checkpoint {config.checkpoint} recorded with this index is missing or changed")
        return load_feature_model(bands, weights=config.checkpoint)
    weights: str | None = config.weights
    try:
        default_path, _ = BACKBONES[config.backbone].default_weights()
        if file_sha256(default_path) == config.weights_sha256:
            weights = None
    except WeightsError:
        pass
    if weights is not None and (not Path(weights).is_file() or file_sha256(weights) != config.weights_sha256):
        raise ModelMismatchError(f"the {config.backbone} weights {config.weights} recorded with this index are missing or changed")
    return load_feature_model(bands, config.backbone, weights, rgb_names, all_bands, config.input_size, config.pooling,
                              config.stages, config.views)  # fmt: skip


def configure_threads() -> None:
    """Use every core for intra-op work; inference on CPU is compute-bound."""
    torch.set_num_threads(max(1, os.cpu_count() or 1))

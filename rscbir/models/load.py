"""Build the feature model that turns patches into vectors, from options or a checkpoint.

The same :class:`ModelConfig` is written next to every embedding store, so a
later query or append embeds exactly the same way, and a different model is
recognised by its :meth:`ModelConfig.fingerprint`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from rscbir.errors import ModelError
from rscbir.models.backbones import DEFAULT_BACKBONE, load_backbone
from rscbir.models.features import FeatureModel, InputSpec, Pooling, resolve_input
from rscbir.models.finetune import read_checkpoint


@dataclass(frozen=True)
class ModelConfig:
    """Everything that decides how a patch becomes a vector."""

    backbone: str
    weights: str  # file the trunk weights came from
    weights_sha256: str
    pooling: str
    input_bands: tuple[str, ...]
    rgb: tuple[int, ...]
    input_size: int | None
    dim: int
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None

    def fingerprint(self) -> dict:
        """The fields that must match for two vectors to be comparable."""
        keys = ("backbone", "weights_sha256", "pooling", "input_bands", "rgb", "input_size", "dim", "checkpoint_sha256")
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if k in keys}

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, doc: dict) -> "ModelConfig":
        doc = dict(doc)
        doc["input_bands"], doc["rgb"] = tuple(doc["input_bands"]), tuple(doc["rgb"])
        return cls(**doc)


def load_feature_model(
    scene_bands: Sequence[str],
    backbone: str | None = None,
    weights: str | os.PathLike | None = None,
    rgb: Sequence[str] | None = None,
    all_bands: bool = False,
    input_size: int | None = 224,
    pooling: Pooling | str = Pooling.AVG,
) -> tuple[FeatureModel, ModelConfig]:
    """The feature model for a scene with ``scene_bands``, and its config.

    ``weights`` may be a plain state dict for ``backbone`` or a checkpoint
    written by ``rscbir finetune`` (which then fixes backbone, head, bands and
    pooling). Raises :class:`ModelError` when the scene lacks the bands the
    model needs.
    """
    checkpoint = read_checkpoint(weights) if weights is not None else None
    if checkpoint is None:
        trunk = load_backbone(backbone or DEFAULT_BACKBONE, weights)
        spec = resolve_input(scene_bands, rgb, all_bands, input_size)
        model = FeatureModel(trunk, spec, pooling).eval()
        ckpt_path = ckpt_sha = None
    else:
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
        model = FeatureModel(trunk, spec, checkpoint["pooling"], head.eval())
        if checkpoint["trunk"] is not None:
            model.backbone.trunk.load_state_dict(checkpoint["trunk"])
        model.eval()
        from rscbir.models.backbones import file_sha256

        ckpt_path, ckpt_sha = str(weights), file_sha256(weights)  # type: ignore[arg-type]
    for p in model.parameters():
        p.requires_grad_(False)
    config = ModelConfig(
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
    )
    return model, config


def model_for_scenes(
    scenes: Sequence,
    preset=None,
    backbone: str | None = None,
    weights: str | os.PathLike | None = None,
    all_bands: bool = False,
    input_size: int | None = 224,
    pooling: Pooling | str = Pooling.AVG,
):
    """The feature model for these scenes, its config, and the scenes cut to the bands it reads.

    ``preset`` (a :class:`rscbir.presets.Preset`) names the RGB bands and, with
    ``all_bands``, the bands fed through the inflated first convolution.
    """
    bands = scenes[0].band_names
    if all_bands and preset is not None and preset.all_bands:
        bands = [b for b in preset.all_bands if b in bands]
    model, config = load_feature_model(
        bands, backbone=backbone, weights=weights, rgb=preset.rgb if preset is not None else None,
        all_bands=all_bands, input_size=input_size, pooling=pooling,
    )  # fmt: skip
    return model, config, [s.select(list(config.input_bands)) for s in scenes]


def model_from_config(config: ModelConfig) -> FeatureModel:
    """The feature model an index or store recorded, verified by weights hash.

    The installed default weights are used when their hash matches (the venv
    may have moved); otherwise the recorded file, which must still hash the same.
    """
    from rscbir.errors import ModelMismatchError, WeightsError
    from rscbir.models.backbones import BACKBONES, file_sha256

    bands = list(config.input_bands)
    rgb_names = [bands[i] for i in config.rgb]
    all_bands = len(bands) != 3 or tuple(config.rgb) != (0, 1, 2)
    if config.checkpoint:
        if not Path(config.checkpoint).is_file() or file_sha256(config.checkpoint) != config.checkpoint_sha256:
            raise ModelMismatchError(f"the fine-tuned checkpoint {config.checkpoint} recorded with this index is missing or changed")
        model, _ = load_feature_model(bands, weights=config.checkpoint)
        return model
    weights: str | None = config.weights
    try:
        default_path, _ = BACKBONES[config.backbone].default_weights()
        if file_sha256(default_path) == config.weights_sha256:
            weights = None
    except WeightsError:
        pass
    if weights is not None and (not Path(weights).is_file() or file_sha256(weights) != config.weights_sha256):
        raise ModelMismatchError(f"the {config.backbone} weights {config.weights} recorded with this index are missing or changed")
    model, _ = load_feature_model(bands, config.backbone, weights, rgb_names, all_bands, config.input_size, config.pooling)
    return model


def configure_threads() -> None:
    """Use every core for intra-op work; inference on CPU is compute-bound."""
    torch.set_num_threads(max(1, os.cpu_count() or 1))

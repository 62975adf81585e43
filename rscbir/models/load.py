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
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from rscbir.errors import ModelError, ModelMismatchError, WeightsError
from rscbir.models.backbones import BACKBONES, DEFAULT_BACKBONE, file_sha256, load_backbone
from rscbir.models.checkpoint import read_checkpoint
from rscbir.models.features import FeatureModel, InputSpec, ModelConfig, resolve_input
from rscbir.models.options import ModelOptions
from rscbir.modes import Pooling

__all__ = ["ModelConfig", "ModelOptions", "feature_model", "load_feature_model", "model_for_images", "model_for_scenes", "model_from_config",
           "configure_threads"]


def load_feature_model(scene_bands: Sequence[str], rgb: Sequence[str] | None = None, **options) -> FeatureModel:
    """The feature model for a scene with ``scene_bands``, from :class:`ModelOptions` fields given by name
    (``backbone``, ``weights``, ``input_size``, ``pooling``, ...): ``load_feature_model(["R", "G", "B"], input_size=32)``."""
    if "weights" in options and options["weights"] is not None:
        options["weights"] = str(options["weights"])
    return feature_model(scene_bands, ModelOptions(**options), rgb)


def feature_model(scene_bands: Sequence[str], options: ModelOptions = ModelOptions(), rgb: Sequence[str] | None = None) -> FeatureModel:
    """The feature model (with ``model.config``) for a scene with ``scene_bands``, built as ``options`` say.

    ``options.weights`` may be a plain state dict for the backbone or a checkpoint written by
    ``rscbir finetune`` (which then fixes backbone, head, bands and pooling). ``rgb`` names the scene's
    red, green and blue bands. Raises :class:`ModelError` when the scene lacks the bands the model needs.
    """
    weights = options.weights
    checkpoint = read_checkpoint(weights) if weights is not None else None
    if checkpoint is None:
        model = _pretrained(scene_bands, options, rgb)
        ckpt_path = ckpt_sha = None
    else:
        model = _from_checkpoint(checkpoint, scene_bands, options.backbone, weights)
        ckpt_path, ckpt_sha = str(weights), file_sha256(weights)
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


def _pretrained(scene_bands: Sequence[str], options: ModelOptions, rgb: Sequence[str] | None) -> FeatureModel:
    trunk = load_backbone(options.backbone or DEFAULT_BACKBONE, options.weights)
    spec = resolve_input(scene_bands, rgb, options.all_bands, options.input_size or None)
    return FeatureModel(trunk, spec, options.pooling, stages=options.stages, views=options.views).eval()


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


def model_for_scenes(scenes: Sequence, preset=None, options: ModelOptions = ModelOptions()) -> tuple[FeatureModel, list]:
    """The feature model for these scenes, and the scenes cut to the bands it reads.

    ``preset`` (a :class:`rscbir.presets.Preset`) names the RGB bands and, with
    ``options.all_bands``, the bands fed through the inflated first convolution.
    """
    bands = scenes[0].band_names
    if options.all_bands and preset is not None and preset.all_bands:
        bands = [b for b in preset.all_bands if b in bands]
    model = feature_model(bands, options, preset.rgb if preset is not None else None)
    return model, [s.select(list(model.config.input_bands)) for s in scenes]


def model_for_images(options: ModelOptions = ModelOptions()) -> FeatureModel:
    """The feature model for plain RGB image files (scene sets, chips)."""
    return feature_model(["R", "G", "B"], options)


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
        return feature_model(bands, ModelOptions(weights=config.checkpoint))
    weights: str | None = config.weights
    try:
        default_path, _ = BACKBONES[config.backbone].default_weights()
        if file_sha256(default_path) == config.weights_sha256:
            weights = None
    except WeightsError:
        pass
    if weights is not None and (not Path(weights).is_file() or file_sha256(weights) != config.weights_sha256):
        raise ModelMismatchError(f"the {config.backbone} weights {config.weights} recorded with this index are missing or changed")
    options = ModelOptions(config.backbone, weights, all_bands, Pooling(config.pooling), config.input_size, stages=config.stages,
                           views=config.views)  # fmt: skip
    return feature_model(bands, options, rgb_names)


def configure_threads() -> None:
    """Use every core for intra-op work; inference on CPU is compute-bound."""
    torch.set_num_threads(max(1, os.cpu_count() or 1))

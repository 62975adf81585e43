"""Fine-tuned model checkpoints: what ``rscbir finetune`` writes and ``--weights`` reads.

Kept apart from training so that loading a model never pulls in training code.
A checkpoint records the backbone (and the hash of its pretrained weights), the
head, the band mapping, pooling and, when fine-tuning changed trunk stages, the
trunk itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from rscbir.atomic import atomic_path
from rscbir.errors import ModelError
from rscbir.models.features import FeatureModel

CHECKPOINT_VERSION = 1


def save_checkpoint(model: FeatureModel, path: str | os.PathLike, mode: str, classes: Sequence[str] = (), history=()) -> Path:
    """Write a fine-tuned model (atomically) for ``--weights``.

    The trunk is saved whenever training changed it (``model.trained_stages``),
    so the trained stages are never lost, whatever ``requires_grad`` says now.
    """
    if model.head is None:
        raise ModelError("model has no trained head to save")
    payload = {
        "rscbir_checkpoint": CHECKPOINT_VERSION,
        "mode": mode,
        "trained_stages": int(model.trained_stages),
        "backbone": model.backbone.name,
        "backbone_weights": model.backbone.weights.source,
        "backbone_sha256": model.backbone.weights.sha256,
        "trunk": model.backbone.trunk.state_dict() if model.trained_stages else None,
        "head": model.head.state_dict(),
        "head_in": int(model.head.in_features),
        "head_dim": int(model.head.out_features),
        "input_spec": {"bands": list(model.input_spec.bands), "rgb": list(model.input_spec.rgb), "size": model.input_spec.size},
        "pooling": model.pooling.value,
        "stages": model.stages,
        "views": model.views,
        "mean": [float(v) for v in model.mean.flatten()],
        "std": [float(v) for v in model.std.flatten()],
        "classes": list(classes),
        "history": list(history),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_checkpoint(path: str | os.PathLike) -> dict | None:
    """The checkpoint dict when ``path`` is an rscbir fine-tune checkpoint, else None (a plain state dict)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types for files that are not its checkpoints
        return None
    if isinstance(obj, dict) and obj.get("rscbir_checkpoint"):
        return obj
    return None

"""Fine-tuning for retrieval: your own small FC head on a pretrained trunk.

Two ways to train the head (and, with ``unfreeze``, the last trunk stages):

* **supervised**, from labelled images in class folders (ImageFolder layout):
  a linear head to a short embedding (128-d by default) followed by a cosine
  classifier, so the embedding itself becomes class-discriminative;
* **self-supervised**, with no labels, from patches of scenes: Tile2Vec-style
  triplets (Jean et al. 2019) where a spatial neighbour must land closer to
  the anchor than a distant patch.

With a frozen trunk the pooled trunk features of every training image are
computed once for all 8 flips/90-degree rotations, so each epoch costs only the
head. Validation loss drives early stopping. The checkpoint records backbone,
head, band mapping and normalisation; ``--weights CHECKPOINT`` loads it.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rscbir.errors import ModelError
from rscbir.datasets.scene_sets import LabelledImages
from rscbir.images import load_image
from rscbir.metrics import mean_average_precision
from rscbir.models.features import FeatureModel, dihedral, trunk_stages
from rscbir.tiling import iter_patches

log = logging.getLogger(__name__)


class CosineClassifier(nn.Module):
    """Logits = scale * cos(embedding, class weight): trains the embedding's angles."""

    def __init__(self, dim: int, classes: int, scale: float = 16.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, dim) * 0.01)
        self.scale = scale

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(embedding, dim=1) @ F.normalize(self.weight, dim=1).T


@dataclass(frozen=True)
class TrainConfig:
    """Head training settings (immutable: training returns its history instead of writing here)."""

    dim: int = 128
    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.2
    patience: int = 8
    unfreeze: int = 0  # number of last trunk stages to train too
    seed: int = 0
    max_steps: int | None = None  # stop after this many optimiser steps (tests, smoke runs)


def _fit(
    config: TrainConfig,
    batches: Callable[[], Iterable],
    step: Callable[[object], float],
    validate: Callable[[], dict],
    snapshot: Callable[[], object],
    progress: Callable[[str], None] | None,
) -> tuple[object, list[dict]]:
    """Epochs of ``step`` over ``batches()`` with early stopping on ``validate()['val_loss']``.

    Returns the ``snapshot()`` taken at the best validation loss and the per-epoch history.
    """
    history: list[dict] = []
    best_loss, best, stale, steps = float("inf"), snapshot(), 0, 0
    for epoch in range(config.epochs):
        loss = float("nan")
        for batch in batches():
            loss = step(batch)
            steps += 1
            if config.max_steps and steps >= config.max_steps:
                break
        record = {"epoch": epoch, "train_loss": loss, **validate()}
        history.append(record)
        if progress:
            progress(f"epoch {epoch}: " + ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in record.items() if k != "epoch"))
        score = record["val_loss"] if np.isfinite(record["val_loss"]) else loss  # no validation split: train loss
        if score < best_loss - 1e-4:
            best_loss, best, stale = score, snapshot(), 0
        else:
            stale += 1
        if stale >= config.patience or (config.max_steps and steps >= config.max_steps):
            break
    return best, history


def _pooled_views(model: FeatureModel, images: Sequence[torch.Tensor], views: int, batch: int) -> torch.Tensor:
    """(N, views, C) pooled trunk features of each image under the first ``views`` dihedral transforms."""
    out = []
    with torch.inference_mode():
        for k in range(views):
            feats = []
            for start in range(0, len(images), batch):
                chunk = torch.stack([dihedral(img, k) for img in images[start : start + batch]])
                feats.append(model.pooled(chunk.contiguous(memory_format=torch.channels_last)))
            out.append(torch.cat(feats))
    return torch.stack(out, dim=1)


def train_supervised(
    model: FeatureModel,
    images: Sequence[torch.Tensor],
    labels: Sequence[int],
    classes: Sequence[str],
    config: TrainConfig = TrainConfig(),
    progress: Callable[[str], None] | None = None,
) -> tuple[FeatureModel, list[dict]]:
    """Train a head (and optionally the last trunk stages) on labelled images.

    ``images`` are scaled (bands, H, W) tensors in [0, 1]; returns ``model``
    with ``model.head`` set to the best head on the validation split, and the
    per-epoch history.
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    labels_arr = np.asarray(labels)
    if len(set(labels_arr.tolist())) < 2:
        raise ModelError("supervised fine-tuning needs at least two classes")
    train_idx, val_idx = stratified_split(labels_arr, config.val_fraction, rng)
    head = nn.Linear(model.pooled_dim, config.dim)
    classifier = CosineClassifier(config.dim, len(classes))
    params = [*head.parameters(), *classifier.parameters(), *unfreeze_last_stages(model, config.unfreeze)]
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    y = torch.as_tensor(labels_arr, dtype=torch.long)

    frozen = config.unfreeze == 0
    if frozen:
        model.eval()
        cached = _pooled_views(model, [images[i] for i in train_idx], 8, config.batch_size)
        cached_val = _pooled_views(model, [images[i] for i in val_idx], 1, config.batch_size)[:, 0]

    def features(indices: np.ndarray, train: bool) -> torch.Tensor:
        if frozen:
            if train:
                positions = torch.as_tensor(indices)
                return cached[positions, torch.randint(0, 8, (len(indices),))]
            return cached_val[torch.as_tensor(indices)]
        source = train_idx if train else val_idx
        batch = torch.stack([dihedral(images[source[i]], random.randrange(8) if train else 0) for i in indices])
        return model.pooled(batch)

    def step(batch) -> float:
        logits = classifier(head(features(batch, True)))
        loss = F.cross_entropy(logits, y[np.asarray(train_idx)[batch]])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        return loss.item()

    def batches():
        head.train(), classifier.train()
        if not frozen:
            model.backbone.train()
        order = rng.permutation(len(train_idx))
        return (order[start : start + config.batch_size] for start in range(0, len(order), config.batch_size))

    def validate() -> dict:
        """Early stopping watches 1 - mAP of the validation embeddings: retrieval is what the head is for,
        and it keeps improving for epochs after the cross-entropy has bottomed out."""
        head.eval(), classifier.eval(), model.backbone.eval()
        if len(val_idx) < 2:
            return {"val_loss": float("nan"), "val_map": float("nan")}
        with torch.no_grad():
            embedded = head(features(np.arange(len(val_idx)), False))
            truth = y[np.asarray(val_idx)]
            ce = float(F.cross_entropy(classifier(embedded), truth))
            val_map = mean_average_precision(F.normalize(embedded, dim=1).numpy(), truth.numpy())
        return {"val_loss": 1.0 - val_map, "val_map": val_map, "val_ce": ce}

    def snapshot():
        trunk = None if frozen else {k: v.clone() for k, v in model.backbone.state_dict().items()}
        return {k: v.clone() for k, v in head.state_dict().items()}, trunk

    (head_state, trunk_state), history = _fit(config, batches, step, validate, snapshot, progress)
    return install_head(model, head, head_state, trunk_state, config.unfreeze), history


def install_head(model: FeatureModel, head: nn.Module, head_state: dict, trunk_state: dict | None, trained_stages: int) -> FeatureModel:
    """``model`` with the best head (and trunk stages) found, frozen, in eval mode."""
    head.load_state_dict(head_state)
    if trunk_state is not None:
        model.backbone.load_state_dict(trunk_state)
    model.head = head.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.trained_stages = trained_stages
    return model.eval()


def stratified_split(labels: np.ndarray, val_fraction: float, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """(train, validation) positions with ``val_fraction`` of every class in validation (none of a class of one)."""
    train_idx, val_idx = [], []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_val = max(1, int(round(len(members) * val_fraction))) if len(members) > 1 else 0
        val_idx.extend(members[:n_val])
        train_idx.extend(members[n_val:])
    return train_idx, val_idx


def unfreeze_last_stages(model: FeatureModel, count: int) -> list[nn.Parameter]:
    """Freeze the trunk except its last ``count`` stages; returns the parameters left to train."""
    stages = trunk_stages(model)
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    params = []
    for stage in stages[len(stages) - count :] if count else []:
        for p in stage.parameters():
            p.requires_grad_(True)
            params.append(p)
    return params


def train_triplets(
    model: FeatureModel,
    anchors: torch.Tensor,
    neighbours: torch.Tensor,
    config: TrainConfig = TrainConfig(),
    margin: float = 0.5,
    progress: Callable[[str], None] | None = None,
) -> tuple[FeatureModel, list[dict]]:
    """Self-supervised head training on pooled trunk features of spatial neighbours.

    ``anchors[i]`` and ``neighbours[i]`` are (N, C) pooled features of two
    patches that touch on the ground; distant patches are drawn at random from
    the other anchors. Loss: triplet margin on L2-normalised head outputs.
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    n = len(anchors)
    if n < 4:
        raise ModelError(f"self-supervised fine-tuning needs at least 4 patch pairs, got {n}")
    n_val = max(1, int(n * config.val_fraction))
    order = rng.permutation(n)
    val, train = order[:n_val], order[n_val:]
    head = nn.Linear(anchors.shape[1], config.dim)
    optimiser = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def loss_on(idx: np.ndarray) -> torch.Tensor:
        distant = torch.as_tensor(rng.choice(train if len(idx) > 1 else val, len(idx)))
        a = F.normalize(head(anchors[idx]), dim=1)
        p = F.normalize(head(neighbours[idx]), dim=1)
        d = F.normalize(head(anchors[distant]), dim=1)
        return F.triplet_margin_loss(a, p, d, margin=margin)

    def step(batch) -> float:
        loss = loss_on(batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        return loss.item()

    def batches():
        head.train()
        shuffled = rng.permutation(train)
        return (shuffled[start : start + config.batch_size] for start in range(0, len(shuffled), config.batch_size))

    def validate() -> dict:
        head.eval()
        with torch.no_grad():
            return {"val_loss": float(loss_on(val))}

    def snapshot():
        return {k: v.clone() for k, v in head.state_dict().items()}

    best, history = _fit(config, batches, step, validate, snapshot, progress)
    head.load_state_dict(best)
    model.head = head.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, history


# ------------------------------------------------------------ data preparation
def finetune_on_images(model: FeatureModel, images: LabelledImages, config: TrainConfig = TrainConfig(),
                       progress=None) -> tuple[FeatureModel, list[dict]]:  # fmt: skip
    """Supervised fine-tuning on a class-per-folder image set."""
    tensors = [load_image(p) for p in images.paths]
    return train_supervised(model, tensors, images.labels.tolist(), images.classes, config, progress)


def labelled_patches(scenes, labels_path, field_name: str, tiling, grid=None):
    """(tensors, labels, classes) for patches lying inside labelled polygons.

    A patch takes the label of the polygon that contains its centre.
    """
    import geopandas as gpd

    try:
        polygons = gpd.read_file(labels_path)
    except Exception as exc:  # pyogrio raises its own DataSourceError
        raise ModelError(f"{labels_path}: not a readable vector file ({exc})") from None
    if field_name not in polygons.columns:
        raise ModelError(f"{labels_path}: no field {field_name!r}; fields: {', '.join(c for c in polygons.columns if c != 'geometry')}")
    if polygons.crs is None:
        raise ModelError(f"{labels_path}: polygons have no CRS")
    classes = sorted({str(v) for v in polygons[field_name].dropna()})
    tensors, labels = [], []
    for scene in scenes:
        scene_grid = grid or scene.grid
        local = polygons.to_crs(scene_grid.crs)
        for patch in iter_patches(scene, tiling, scene_grid):
            b = patch.record.bounds
            centre = gpd.points_from_xy([(b.left + b.right) / 2], [(b.bottom + b.top) / 2])[0]
            inside = local[local.contains(centre)]
            if len(inside):
                tensors.append(torch.from_numpy(scene.scale(patch.data)))
                labels.append(classes.index(str(inside.iloc[0][field_name])))
    if len(set(labels)) < 2:
        raise ModelError(f"{labels_path}: patches fall inside polygons of fewer than two classes; check the overlap with the scenes")
    return tensors, labels, classes


def neighbour_pairs(model: FeatureModel, scenes, tiling, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled trunk features of horizontally or vertically adjacent patches (anchor, neighbour)."""
    anchors, neighbours = [], []
    with torch.inference_mode():
        for scene in scenes:
            keys, feats, batch = [], [], []
            for patch in iter_patches(scene, tiling):
                keys.append((patch.record.row, patch.record.col))
                batch.append(torch.from_numpy(scene.scale(patch.data)))
                if len(batch) == batch_size:
                    feats.append(model.pooled(torch.stack(batch)))
                    batch = []
            if batch:
                feats.append(model.pooled(torch.stack(batch)))
            if not feats:
                continue
            table = torch.cat(feats)
            position = {k: i for i, k in enumerate(keys)}
            for (row, col), i in position.items():
                for other in ((row, col + 1), (row + 1, col)):
                    if other in position:
                        anchors.append(table[i])
                        neighbours.append(table[position[other]])
    if not anchors:
        raise ModelError("no adjacent patch pairs: use larger scenes or a smaller --patch-size")
    return torch.stack(anchors), torch.stack(neighbours)

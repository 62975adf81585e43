"""A change model taught by labelled pairs: a light head on the frozen backbone's per-pixel evidence (torch).

The backbone stays the pretrained one, frozen: each pair's per-pixel evidence (:mod:`rscbir.change.evidence`,
the Siamese comparison of both dates' stage features) is computed once, and a two-layer perceptron learns
which of it is change. Chosen on the OSCD design cities over a convolutional decoder on the same evidence and
over more direction stages, which fitted the five design cities better and the confirmation cities worse
(results.md). Early stopping and the cut read a spatial hold-out: the last rows of every pair.

A checkpoint (``rscbir finetune-change -o change.pt``) records the backbone and its weights hash, the bands,
scaling, patch and input size, and the evidence channels; a scene read another way is refused with what
differs.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rscbir.atomic import atomic_path
from rscbir.change.areas import drop_small_areas, smooth_scores
from rscbir.change.evidence import PairEvidence
from rscbir.errors import ModelMismatchError
from rscbir.models.features import FeatureModel

CHANGE_CHECKPOINT = 1
CUTS = tuple(np.round(np.arange(0.3, 0.96, 0.05), 2))


@dataclass(frozen=True)
class HeadTraining:
    """How ``finetune-change`` trains: ``hidden`` units, up to ``epochs`` passes with early stopping after
    ``patience`` epochs without a better hold-out F1, ``negatives`` unchanged pixels sampled per changed one."""

    hidden: int = 32
    epochs: int = 10
    patience: int = 3
    holdout: float = 0.2  # share of each pair's rows (the last ones) held out for early stopping and the cut
    negatives: int = 4
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    batch: int = 2048
    seed: int = 0
    smooth: float = 1.0  # as the pixel change mask smooths label-free scores
    min_pixels: int = 10


@dataclass
class ChangeHead:
    """A trained change head: ``net`` maps standardised evidence channels ``channels`` to a change logit;
    pixels whose smoothed probability passes ``cut`` changed. ``meta`` is what the evidence was made with."""

    net: nn.Sequential
    channels: list[str]
    mean: np.ndarray
    std: np.ndarray
    cut: float
    meta: dict
    history: list = field(default_factory=list)

    def columns(self, evidence: PairEvidence) -> np.ndarray:
        missing = sorted(set(self.channels) - set(evidence.names))
        if missing:
            raise ModelMismatchError(f"the change model reads evidence channels this pair lacks ({', '.join(missing[:4])}"
                                     f"{' ...' if len(missing) > 4 else ''}); it was trained on {describe_meta(self.meta)}")  # fmt: skip
        where = {name: k for k, name in enumerate(evidence.names)}
        return np.array([where[name] for name in self.channels])

    def predict(self, evidence: PairEvidence) -> tuple[np.ndarray, np.ndarray]:
        """(probability (H, W) float32, NaN where not valid; hidden activations (n_valid, hidden)) of a pair."""
        x = (evidence.pixels()[:, self.columns(evidence)] - self.mean) / self.std
        self.net.eval()
        probability, hidden = [], []
        with torch.inference_mode():
            for start in range(0, len(x), 65536):
                h = self.net[:-1](torch.from_numpy(x[start : start + 65536]))
                hidden.append(h.numpy())
                probability.append(torch.sigmoid(self.net[-1](h))[:, 0].numpy())
        out = np.full(evidence.valid.shape, np.nan, np.float32)
        out[evidence.valid] = np.concatenate(probability) if probability else []
        return out, (np.concatenate(hidden) if hidden else np.zeros((0, self.net[-1].in_features), np.float32))

    def backbone(self) -> FeatureModel:
        """The pretrained backbone this head's evidence was made with (verified by weights hash)."""
        from rscbir.models.config import ModelConfig
        from rscbir.models.load import model_from_config

        return model_from_config(ModelConfig.from_dict(self.meta["model"]))

    def check(self, meta: dict) -> None:
        """Refuse evidence made another way than the training evidence, naming what differs."""
        differ = [f"{k}: trained {self.meta.get(k)!r}, here {meta.get(k)!r}" for k in CHECKED if self.meta.get(k) != meta.get(k)]
        if differ:
            raise ModelMismatchError("this change model was trained on other evidence (" + "; ".join(differ) + ")")

    def save(self, path: str | os.PathLike) -> None:
        payload = {"rscbir_change_head": CHANGE_CHECKPOINT, "state": self.net.state_dict(), "hidden": self.net[0].out_features,
                   "channels": list(self.channels), "mean": self.mean.tolist(), "std": self.std.tolist(), "cut": float(self.cut),
                   "meta": self.meta, "history": list(self.history)}  # fmt: skip
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)


CHECKED = ("backbone", "weights_sha256", "bands", "spectral_bands", "scaling", "patch_size", "input_size")


def describe_meta(meta: dict) -> str:
    return f"{meta.get('backbone')} on bands {', '.join(meta.get('bands', []))}, {meta.get('patch_size')} px patches"


def read_change_head(path: str | os.PathLike) -> ChangeHead | None:
    """The change head of a ``finetune-change`` checkpoint; None when ``path`` is some other file."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types for files that are not its checkpoints
        return None
    if not (isinstance(payload, dict) and payload.get("rscbir_change_head")):
        return None
    net = _network(len(payload["channels"]), payload["hidden"])
    net.load_state_dict(payload["state"])
    return ChangeHead(net, payload["channels"], np.asarray(payload["mean"], np.float32), np.asarray(payload["std"], np.float32),
                      payload["cut"], payload["meta"], payload.get("history", []))  # fmt: skip


def _network(channels: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, 1))


def train_change_head(pairs: Sequence[tuple[PairEvidence, np.ndarray]], meta: dict, training: HeadTraining = HeadTraining(),
                      progress: Callable[[str], None] | None = None) -> ChangeHead:  # fmt: skip
    """Train a change head on labelled pairs ((evidence, change mask on its grid), ...)."""
    torch.manual_seed(training.seed)
    rng = np.random.default_rng(training.seed)
    channels = list(pairs[0][0].names)  # the head reads every evidence channel
    for evidence, _ in pairs:
        if evidence.names != pairs[0][0].names:
            raise ModelMismatchError("labelled pairs give different evidence channels (different bands?); train on pairs read alike")
    held = [_holdout(e.valid, training.holdout) for e, _ in pairs]
    x, y = _samples(pairs, held, training, rng)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    xt, yt = torch.from_numpy((x - mean) / std), torch.from_numpy(y)
    net = _network(x.shape[1], training.hidden)
    optimiser = torch.optim.AdamW(net.parameters(), training.learning_rate, weight_decay=training.weight_decay)
    positive_weight = torch.tensor(float((1 - y.mean()) / max(y.mean(), 1e-6)))
    head = ChangeHead(net, channels, mean.astype(np.float32), std.astype(np.float32), 0.5, meta)
    best, best_state, stale, history = -1.0, None, 0, []
    for epoch in range(training.epochs):
        start = time.perf_counter()
        net.train()
        order = torch.randperm(len(yt))
        for at in range(0, len(order), training.batch):
            rows = order[at : at + training.batch]
            loss = F.binary_cross_entropy_with_logits(net(xt[rows])[:, 0], yt[rows], pos_weight=positive_weight)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        f1, cut = _holdout_f1(head, pairs, held, training)
        history.append({"epoch": epoch + 1, "holdout_f1": f1, "cut": cut, "seconds": round(time.perf_counter() - start, 2)})
        if progress:
            progress(f"epoch {epoch + 1}: hold-out pixel F1 {f1:.3f} at cut {cut:.2f}")
        if f1 > best:
            best, best_state, stale, head.cut = f1, {k: v.clone() for k, v in net.state_dict().items()}, 0, cut
        else:
            stale += 1
            if stale >= training.patience:
                break
    net.load_state_dict(best_state)
    head.history = history
    head.meta = {**meta, "training": dataclasses.asdict(training), "holdout_f1": best}
    return head


def _holdout(valid: np.ndarray, share: float) -> np.ndarray:
    rows = valid.shape[0]
    held = np.zeros(valid.shape, bool)
    held[int(round(rows * (1 - share))) :] = True
    return held & valid


def _samples(pairs, held, training: HeadTraining, rng) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for (evidence, truth), holdout in zip(pairs, held):
        train = evidence.valid & ~holdout
        x, y = evidence.pixels(train), truth[train & evidence.valid]
        positive, negative = np.flatnonzero(y), np.flatnonzero(~y)
        keep = min(len(negative), training.negatives * len(positive) + 20000)
        rows = np.concatenate([positive, rng.choice(negative, keep, replace=False)])
        xs.append(x[rows])
        ys.append(y[rows])
    return np.concatenate(xs), np.concatenate(ys).astype(np.float32)


def change_mask(probability: np.ndarray, cut: float, smooth: float = 1.0, min_pixels: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(changed mask, smoothed probability) of a probability map, as the label-free mask is made."""
    smoothed = smooth_scores(probability, smooth)
    return drop_small_areas(np.nan_to_num(smoothed, nan=-1) > cut, min_pixels), smoothed.astype(np.float32)


def _holdout_f1(head, pairs, held, training: HeadTraining) -> tuple[float, float]:
    maps = [head.predict(evidence)[0] for evidence, _ in pairs]
    best = (-1.0, 0.5)
    for cut in CUTS:
        tp = fp = fn = 0
        for probability, (_, truth), holdout in zip(maps, pairs, held):
            mask = change_mask(probability, cut, training.smooth, training.min_pixels)[0] & holdout
            t = truth & holdout
            tp, fp, fn = tp + (mask & t).sum(), fp + (mask & ~t).sum(), fn + (~mask & t).sum()
        f1 = float(2 * tp / max(2 * tp + fp + fn, 1))
        best = max(best, (f1, float(cut)))
    return best


__all__ = ["CHANGE_CHECKPOINT", "ChangeHead", "HeadTraining", "change_mask", "read_change_head", "train_change_head"]

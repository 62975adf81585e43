"""Clicks simulated from a change label, as a user would make them: to measure marks the way they are used.

A first round puts half of the clicks inside changed regions (each in a different connected region, largest
regions not favoured) and half on unchanged ground; a later round clicks where the current map is most wrong
(the centres of its largest missed and largest false areas), as a person correcting the map would. A click
is one pixel.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def first_clicks(truth: np.ndarray, valid: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """(H, W) int8 marks: ``count`` clicks, ceil(count / 2) changed, the rest unchanged; -1 elsewhere."""
    rng = np.random.default_rng(seed)
    marks = np.full(truth.shape, -1, np.int8)
    changed = truth & valid
    labels, regions = ndimage.label(changed)
    wanted_changed = min((count + 1) // 2, regions)
    for region in rng.permutation(np.arange(1, regions + 1))[:wanted_changed]:
        rows, cols = np.nonzero(labels == region)
        k = rng.integers(len(rows))
        marks[rows[k], cols[k]] = 1
    rows, cols = np.nonzero(~truth & valid)
    chosen = rng.choice(len(rows), min(count - wanted_changed, len(rows)), replace=False)
    marks[rows[chosen], cols[chosen]] = 0
    return marks


def correcting_clicks(truth: np.ndarray, predicted: np.ndarray, valid: np.ndarray, count: int,
                      marks: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """``marks`` plus ``count`` clicks where ``predicted`` is most wrong: alternately the innermost pixel of
    the largest missed area (marked changed) and of the largest false area (marked not changed)."""
    out = np.full(truth.shape, -1, np.int8) if marks is None else marks.copy()
    queues = []
    for wrong, answer in ((truth & ~predicted & valid, 1), (~truth & predicted & valid, 0)):
        labels, regions = ndimage.label(wrong & (out < 0))
        sizes = ndimage.sum(wrong, labels, np.arange(1, regions + 1)) if regions else np.zeros(0)
        queues.append([(labels, int(k) + 1, answer) for k in np.argsort(-sizes, kind="stable")])
    order = [item for pair in zip(*queues) for item in pair] + queues[0][len(queues[1]):] + queues[1][len(queues[0]):]
    for labels, region, answer in order[:count]:
        inside = labels == region
        depth = ndimage.distance_transform_edt(inside)
        r, c = np.unravel_index(int(np.argmax(depth)), depth.shape)
        out[r, c] = answer
    return out


__all__ = ["correcting_clicks", "first_clicks"]

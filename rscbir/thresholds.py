"""Label-free thresholds: the score above which a patch or pixel counts as changed.

A :class:`Threshold` is parsed once from its text form (``otsu``,
``percentile:95``, ``sigma:3`` or a number, as given to ``--threshold``) and
then applied to any array of scores, like :class:`rscbir.scene.Scaling`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from rscbir.errors import ThresholdError


class ThresholdRule(str, enum.Enum):
    """How the cut is chosen from the scores of one pair of dates."""

    OTSU = "otsu"  # maximise the between-class variance
    ROBUST = "robust"  # median + k robust standard deviations (1.4826 MAD): an outlier rule for rare change
    PERCENTILE = "percentile"  # flag the top (100 - p) %
    SIGMA = "sigma"  # mean + k standard deviations
    FIXED = "fixed"  # a number


@dataclass(frozen=True)
class Threshold:
    """A threshold rule and its argument; :meth:`value` computes the cut for some scores."""

    rule: ThresholdRule = ThresholdRule.OTSU
    arg: float | None = None

    @classmethod
    def parse(cls, text: "str | float | Threshold") -> "Threshold":
        """Read ``otsu``, ``robust[:3]``, ``percentile[:95]``, ``sigma[:3]`` or a number."""
        if isinstance(text, Threshold):
            return text
        if isinstance(text, (int, float)):
            return cls(ThresholdRule.FIXED, float(text))
        name, _, arg = str(text).strip().lower().partition(":")
        try:
            if name == ThresholdRule.OTSU.value and not arg:
                return cls(ThresholdRule.OTSU)
            if name == ThresholdRule.PERCENTILE.value:
                value = float(arg or 95)
                if not 0 <= value <= 100:
                    raise ValueError
                return cls(ThresholdRule.PERCENTILE, value)
            if name == ThresholdRule.SIGMA.value:
                return cls(ThresholdRule.SIGMA, float(arg or 3))
            if name == ThresholdRule.ROBUST.value:
                return cls(ThresholdRule.ROBUST, float(arg or 3))
            return cls(ThresholdRule.FIXED, float(text))
        except ValueError:
            raise ThresholdError(f"unknown threshold {text!r}; use otsu, robust:3, percentile:95, sigma:3 or a number") from None

    def value(self, scores: np.ndarray) -> float:
        """The cut for ``scores`` (NaNs ignored): values above it are changed."""
        scores = np.asarray(scores, dtype=np.float64)
        scores = scores[np.isfinite(scores)]
        if self.rule is ThresholdRule.FIXED:
            return float(self.arg)  # type: ignore[arg-type]
        if scores.size == 0:
            return math.inf
        if self.rule is ThresholdRule.OTSU:
            return otsu(scores)
        if self.rule is ThresholdRule.PERCENTILE:
            return float(np.percentile(scores, self.arg))
        if self.rule is ThresholdRule.ROBUST:
            median, spread = (float(v) for v in robust_spread(scores))
            if spread < 1e-6:  # no spread (identical dates): nothing is above the cut
                return float(scores.max())
            return median + self.arg * spread  # type: ignore[operator]
        return float(scores.mean() + self.arg * scores.std())  # type: ignore[operator]

    def __str__(self) -> str:
        if self.rule is ThresholdRule.OTSU:
            return "otsu"
        if self.rule is ThresholdRule.FIXED:
            return f"{self.arg:g}"
        return f"{self.rule.value}:{self.arg:g}"


def robust_spread(values: np.ndarray, axis: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(median, 1.4826 x median absolute deviation) along ``axis``, NaNs ignored: a centre and standard
    deviation that the rare outliers (the changes) do not move."""
    centre = np.nanmedian(values, axis=axis, keepdims=True)
    spread = 1.4826 * np.nanmedian(np.abs(values - centre), axis=axis)
    return np.squeeze(centre, axis=axis) if axis is not None else centre.reshape(()), spread


def otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut maximising between-class variance of a 1-D sample."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) < 2 or values.max() - values.min() < 1e-6:
        # no spread (identical dates give float noise around 0): nothing is above the cut
        return float(values.max()) if len(values) else math.inf
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist)
    weight_above = weight[-1] - weight
    mean_below = np.cumsum(hist * centres) / np.maximum(weight, 1)
    total = (hist * centres).sum()
    mean_above = (total - np.cumsum(hist * centres)) / np.maximum(weight_above, 1)
    between = weight * weight_above * (mean_below - mean_above) ** 2
    return float(edges[1:][np.argmax(between)])

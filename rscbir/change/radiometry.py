"""Relative radiometric normalisation between two dates: what light, haze and season do to a whole scene
is removed before the dates are compared."""

from __future__ import annotations

import math

import numpy as np

from rscbir.change.pairs import paired_patches
from rscbir.errors import EmptyGridError
from rscbir.grid import Grid
from rscbir.scene import Scene
from rscbir.thresholds import robust_spread
from rscbir.tiling import TilingConfig, iter_patches


# Radiometry is measured on every SAMPLE_STEP-th row and column of each patch, and more sparsely on grids larger than
# SAMPLE_PIXELS x SAMPLE_STEP² (16 Mpx), so that the samples, not the scene, bound the memory.
SAMPLE_STEP = 4
SAMPLE_PIXELS = 1_000_000


def sample_step(grid: Grid) -> int:
    """The row and column step radiometry samples ``grid`` with: 4, or more on grids above 16 Mpx (about 1 M samples)."""
    return max(SAMPLE_STEP, math.ceil(math.sqrt(grid.width * grid.height / SAMPLE_PIXELS)))


def band_moments(scene: Scene, tiling: TilingConfig, grid: Grid, sample: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-band robust centre and spread (median, 1.4826 MAD) of the scene's valid pixels on ``grid``.

    Streamed patch by patch on every ``sample``-th row and column (:func:`sample_step`). Robust, so the changes themselves (a new
    district is a few percent of the pixels) do not move the normalisation that is meant to remove what the
    whole scene shares.
    """
    sample = sample or sample_step(grid)
    parts = []
    for patch in iter_patches(scene, tiling, grid):
        parts.append(patch.data[:, ::sample, ::sample].reshape(patch.data.shape[0], -1).astype(np.float32))
    if not parts:
        raise EmptyGridError(f"{scene.scene_id}: no valid patch on the common grid; check nodata and the dates' overlap")
    values = np.concatenate(parts, axis=1)
    centre, spread = robust_spread(values, axis=1)
    flat = spread < 1e-6
    spread[flat] = np.maximum(values[flat].std(axis=1), 1e-6)  # a band that is mostly one value: fall back to std
    return centre.astype(np.float64), spread.astype(np.float64)


def invariant_regression(before: Scene, after: Scene, tiling: TilingConfig, grid: Grid, sample: int | None = None,
                         rounds: int = 2, keep: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Relative radiometric normalisation by regression on invariant pixels: per band, after = gain * before
    + offset fitted on co-located pixels, refitted ``rounds`` times on the ``keep`` share with the smallest
    change; returns (gain, offset, robust spread of the residual). Light, haze and season that act on the whole
    scene fall into gain and offset; what is left is change (the idea of IR-MAD, with one band at a time)."""
    sample = sample or sample_step(grid)
    # copies, not views: a view would keep every batch, the whole pair, alive
    pairs = [(p.before[:, :, ::sample, ::sample].copy(), p.after[:, :, ::sample, ::sample].copy())
             for p in paired_patches(before, after, tiling, grid, batch=256)]
    if not pairs:
        raise EmptyGridError(f"{before.scene_id} and {after.scene_id}: no valid patch pair on the common grid")
    x = np.concatenate([b.transpose(1, 0, 2, 3).reshape(b.shape[1], -1) for b, _ in pairs], axis=1).astype(np.float64)
    y = np.concatenate([a.transpose(1, 0, 2, 3).reshape(a.shape[1], -1) for _, a in pairs], axis=1).astype(np.float64)
    invariant = np.ones(x.shape[1], bool)
    for round_ in range(rounds + 1):
        gain, offset = np.ones(len(x)), np.zeros(len(x))
        for band in range(len(x)):
            xs, ys = x[band, invariant], y[band, invariant]
            var = xs.var()
            gain[band] = ((xs - xs.mean()) * (ys - ys.mean())).mean() / var if var > 1e-12 else 1.0
            offset[band] = ys.mean() - gain[band] * xs.mean()
        residual = y - gain[:, None] * x - offset[:, None]
        centre, spread = robust_spread(residual[:, invariant], axis=1)
        spread = np.maximum(spread, 1e-6)
        if round_ < rounds:
            magnitude = np.sqrt((((residual - centre[:, None]) / spread[:, None]) ** 2).sum(axis=0))
            invariant = magnitude <= np.quantile(magnitude, keep)
    return gain, offset + centre, spread


def moment_match(before: Scene, after: Scene, tiling: TilingConfig, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (gain, offset) that map the after date's robust mean and spread onto the before date's."""
    mb, sb = band_moments(before, tiling, grid)
    ma, sa = band_moments(after, tiling, grid)
    return sb / sa, mb - ma * sb / sa


def matched_scale(before: Scene, gain: np.ndarray, offset: np.ndarray):
    """The after date's scaling: its bands mapped by (``gain``, ``offset``), then scaled as the before date is."""
    gain32 = np.asarray(gain, np.float64)[:, None, None].astype(np.float32)
    offset32 = np.asarray(offset, np.float64)[:, None, None].astype(np.float32)

    def scale(data: np.ndarray) -> np.ndarray:
        return before.scale(data.astype(np.float32) * gain32 + offset32)

    return scale


def radiometric_match(before: Scene, after: Scene, tiling: TilingConfig, grid: Grid):
    """Relative radiometric normalisation before the CNN: the after date's bands are mapped linearly onto the
    before date's mean and spread, then scaled as the before date is. A change of light or season over the
    whole scene then reaches the CNN as no change (CVA gets the same invariance from per-scene z-scores)."""
    return matched_scale(before, *moment_match(before, after, tiling, grid))


__all__ = ["SAMPLE_PIXELS", "SAMPLE_STEP", "band_moments", "invariant_regression", "matched_scale", "moment_match", "radiometric_match",
           "sample_step"]

"""Per-pixel evidence of change for a pair of dates: what a model taught by marks or labelled pairs reads.

Every pixel of the common grid gets one vector: the CNN's per-stage cosine distances and the directions of
its feature change (:func:`rscbir.change.cnn.stage_differences`), each band's signed residual after the
invariant-pixel regression, and the label-free scores (``dense``, ``cva``, ``fusion``). The CNN pass is the
expensive part, so the evidence of a pair is cached on disk, keyed by both scenes (files, sizes, times),
the grid, the tiling and the model: a new round of marks reads it back in a second.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np

from rscbir.atomic import atomic_path
from rscbir.cache import cache_root
from rscbir.change.pairs import paired_patches
from rscbir.change.radiometry import invariant_regression, radiometric_match
from rscbir.change.scores import ChangeScores, PixelMosaic, robust_z, score_change
from rscbir.grid import Grid
from rscbir.models.options import ModelOptions
from rscbir.presets import Preset, same_bands
from rscbir.scene import Scene
from rscbir.tiling import EdgePolicy, TilingConfig, aligned_grid

if TYPE_CHECKING:
    from rscbir.models.features import FeatureModel

EVIDENCE_VERSION = 2  # 2: the CVA scores (pixels and patches) are cached with the evidence
F16_LIMIT = 6e4  # evidence is stored as float16; residuals of noise-free pixels can exceed its range
DIRECTION_STAGES = 4  # stages whose feature-change directions are kept (more overfit the OSCD design cities: results.md)


@dataclass
class PairEvidence:
    """Per-pixel evidence of one pair on ``grid``: ``channels`` (C, H, W) float16 named by ``names``,
    ``valid`` where both dates were read; ``scores`` are the label-free scores made on the way."""

    channels: np.ndarray
    names: list[str]
    valid: np.ndarray
    scores: ChangeScores

    @property
    def grid(self) -> Grid:
        return self.scores.grid

    def pixels(self, where: np.ndarray | None = None) -> np.ndarray:
        """(n, C) float32 evidence of the valid pixels (or of the pixels ``where`` is true), row-major."""
        chosen = self.valid if where is None else where & self.valid
        return self.channels.reshape(len(self.channels), -1)[:, chosen.ravel()].T.astype(np.float32)  # a flat gather: 10x a 2-D mask


def pair_evidence(before: Scene, after: Scene, model: FeatureModel, tiling: TilingConfig = TilingConfig(32),
                  grid: Grid | None = None, spectral: tuple[Scene, Scene] | None = None,
                  cache: str | os.PathLike | None = None, batch: int = 16) -> PairEvidence:  # fmt: skip
    """The per-pixel evidence of a pair (see the module), read from ``cache`` when this pair, grid, tiling
    and model were seen before, computed and stored there otherwise (``cache`` None: no cache)."""
    grid = grid or aligned_grid([before, after])
    tiling = _fit(tiling)
    spectral = spectral or (before, after)
    path = Path(cache) / f"{evidence_key(spectral, grid, tiling, model)}.npz" if cache else None
    evidence = _read_cached(path, grid, tiling, before, after) if path is not None else None
    if evidence is None:
        scores = score_change(before, after, None, tiling, grid, spectral=spectral, pixel_maps=True)  # CVA: no CNN
        cnn, cnn_names = _cnn_evidence(before, after, model, tiling, grid, batch)
        residuals = _band_residuals(*spectral, tiling, grid)
        stack = np.concatenate([cnn, residuals])
        valid = np.isfinite(stack).all(axis=0) & np.isfinite(scores.pixels["cva"])
        stack = np.clip(np.nan_to_num(stack), -F16_LIMIT, F16_LIMIT).astype(np.float16)
        names = cnn_names + [f"residual:{b}" for b in spectral[0].band_names]
        stack[:, ~valid] = 0
        evidence = PairEvidence(stack, names, valid, scores)
        if path is not None:
            _write_cached(path, evidence)
    _add_label_free(evidence)
    return evidence


def _read_cached(path: Path, grid: Grid, tiling: TilingConfig, before: Scene, after: Scene) -> PairEvidence | None:
    """The cached evidence of a pair with its CVA scores (pixels and patches), or None when not cached."""
    patches_path = path.with_suffix(".patches.parquet")
    if not (path.exists() and patches_path.exists()):
        return None
    with np.load(path) as stored:
        if "cva" not in stored.files:
            return None
        channels, names, valid, cva = stored["channels"], [str(n) for n in stored["names"]], stored["valid"], stored["cva"]
    scores = ChangeScores(gpd.read_parquet(patches_path), grid, tiling, before, after, {"cva": cva})
    return PairEvidence(channels, names, valid, scores)


def _write_cached(path: Path, evidence: PairEvidence) -> None:
    """Store the evidence and its CVA scores; the .npz is renamed into place last, so it marks a whole entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = evidence.scores.patches[[c for c in evidence.scores.patches.columns if c not in ("dense", "fusion")]]
    with atomic_path(path.with_suffix(".patches.parquet")) as tmp:
        frame.to_parquet(tmp)
    with atomic_path(path, suffix=".npz") as tmp:  # np.savez keeps a name that ends in .npz
        np.savez(tmp, channels=evidence.channels, names=np.array(evidence.names), valid=evidence.valid, cva=evidence.scores.pixels["cva"])


def _add_label_free(evidence: PairEvidence) -> None:
    """The label-free ``dense`` and ``fusion`` scores (pixel and patch) from the evidence's stage distances, as
    :func:`score_change` makes them from the same CNN pass; they join the evidence as its last channels."""
    scores = evidence.scores
    distances = [k for k, name in enumerate(evidence.names) if name.endswith(":distance")]
    dense = np.where(evidence.valid, evidence.channels[distances].astype(np.float32).mean(axis=0), np.nan)
    scores.pixels["dense"] = dense.astype(np.float32)
    scores.pixels["fusion"] = ((robust_z(dense) + robust_z(scores.pixels["cva"])) / 2).astype(np.float32)
    frame = scores.patches
    frame["dense"] = [float(np.nanmean(dense[_window(r)])) for r in frame.itertuples()]
    frame["fusion"] = (robust_z(frame["dense"]) + robust_z(frame["cva"])) / 2
    extra = np.stack([np.clip(np.nan_to_num(scores.pixels[n]), -F16_LIMIT, F16_LIMIT) for n in ("dense", "cva", "fusion")]).astype(np.float16)
    evidence.channels = np.concatenate([evidence.channels, extra])
    evidence.names = evidence.names + ["dense", "cva", "fusion"]


def _window(row) -> tuple[slice, slice]:
    return slice(row.row_off, row.row_off + row.height), slice(row.col_off, row.col_off + row.width)


def evidence_meta(model: FeatureModel, before: Scene, spectral: tuple[Scene, Scene], tiling: TilingConfig) -> dict:
    """What evidence depends on besides the pixels: backbone, weights, bands, scaling, patch and input size.
    A change model trained on evidence made one way refuses evidence made another."""
    return {"backbone": model.config.backbone, "weights_sha256": model.config.weights_sha256, "bands": list(before.band_names),
            "spectral_bands": list(spectral[0].band_names), "scaling": before.scaling.to_dict(),
            "patch_size": tiling.to_dict()["patch_size"], "input_size": model.config.input_size, "evidence": EVIDENCE_VERSION,
            "direction_stages": DIRECTION_STAGES, "model": model.config.to_dict()}  # fmt: skip


def scene_evidence(before: Scene, after: Scene, tiling: TilingConfig = TilingConfig(32), model_options: ModelOptions = ModelOptions(),
                   preset: Preset | None = None, named_bands: bool = False, model: FeatureModel | None = None,
                   cache: str | os.PathLike | None = None) -> tuple[PairEvidence, dict]:  # fmt: skip
    """The evidence of two opened scenes and what it was made with (:func:`evidence_meta`), bands chosen as
    :func:`rscbir.change.scores.score_scenes` chooses them; ``model`` (e.g. a change model's backbone) wins over
    ``model_options``."""
    after = same_bands(after, before, named_bands)
    asked = request_key(before, after, tiling, model_options, preset) if cache is not None and model is None else None
    if asked is not None:
        recalled = _recall(Path(cache), asked, before, after, tiling)
        if recalled is not None:  # a new round of marks: no model is built, torch is not even imported
            return recalled
    if model is None:
        from rscbir.models.load import model_for_scenes  # torch loads here

        model, (model_before, model_after) = model_for_scenes([before, after], preset, model_options)
    else:
        model_before, model_after = (s.select(list(model.config.input_bands)) for s in (before, after))
    evidence = pair_evidence(model_before, model_after, model, tiling, spectral=(before, after), cache=cache)
    meta = evidence_meta(model, model_before, (before, after), tiling)
    if asked is not None:
        _remember(Path(cache), asked, evidence_key((before, after), evidence.grid, _fit(tiling), model), meta)
    return evidence, meta


def request_key(before: Scene, after: Scene, tiling: TilingConfig, model_options: ModelOptions, preset: Preset | None) -> str:
    """A digest of what a user asked for (files, bands, scaling, tiling, model options, preset), known before any
    model is built: it names the evidence an earlier run with the same request made."""
    doc = {"version": EVIDENCE_VERSION, "files": [_file_stats(s) for s in (before, after)], "bands": [before.band_names, after.band_names],
           "scaling": [before.scaling.to_dict(), after.scaling.to_dict()], "tiling": tiling.to_dict(),
           "model": dataclasses.asdict(model_options), "preset": dataclasses.asdict(preset) if preset is not None else None}  # fmt: skip
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _remember(cache: Path, asked: str, evidence: str, meta: dict) -> None:
    weights = meta["model"].get("weights")
    stat = os.stat(weights) if weights and os.path.exists(weights) else None
    doc = {"evidence": evidence, "meta": meta, "weights": [weights, stat.st_size, stat.st_mtime_ns] if stat else None}
    (cache / "requests").mkdir(parents=True, exist_ok=True)
    with atomic_path(cache / "requests" / f"{asked}.json") as tmp:
        tmp.write_text(json.dumps(doc, default=str))


def _recall(cache: Path, asked: str, before: Scene, after: Scene, tiling: TilingConfig) -> tuple[PairEvidence, dict] | None:
    """The evidence and meta an earlier run made for the same request, when its files and the weights are unchanged."""
    try:
        doc = json.loads((cache / "requests" / f"{asked}.json").read_text())
        weights = doc["weights"]
        if weights is not None:
            stat = os.stat(weights[0])
            if [stat.st_size, stat.st_mtime_ns] != weights[1:]:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    meta = doc["meta"]
    model_before, model_after = before.select(list(meta["bands"])), after.select(list(meta["bands"]))
    grid = aligned_grid([model_before, model_after])
    evidence = _read_cached(cache / f"{doc['evidence']}.npz", grid, _fit(tiling), model_before, model_after)
    if evidence is None:
        return None
    _add_label_free(evidence)
    return evidence, meta


def _fit(tiling: TilingConfig) -> TilingConfig:
    """Pixel maps cover the image: patches at the right and bottom edge move inward instead of being dropped."""
    return dataclasses.replace(tiling, edge=EdgePolicy.FIT) if tiling.edge is EdgePolicy.DROP else tiling


def _file_stats(scene: Scene) -> list:
    return [[os.path.abspath(s.path), s.index, os.stat(s.path).st_size, os.stat(s.path).st_mtime_ns] for s in scene.sources]


def evidence_key(spectral: tuple[Scene, Scene], grid: Grid, tiling: TilingConfig, model: FeatureModel) -> str:
    """A digest of what the evidence depends on: the files of both dates (path, size, mtime), grid, tiling, model."""
    files = [f for scene in spectral for f in _file_stats(scene)]
    doc = {"version": EVIDENCE_VERSION, "files": files, "grid": grid.to_dict(), "tiling": tiling.to_dict(),
           "model": dataclasses.asdict(model.config), "directions": DIRECTION_STAGES}  # fmt: skip
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:24]


def default_cache() -> Path:
    """Where pair evidence is cached: ``$RSCBIR_CACHE/change`` or ``~/.cache/rscbir/change``."""
    return cache_root() / "change"


def _cnn_evidence(before, after, model, tiling, grid, batch) -> tuple[np.ndarray, list[str]]:
    from rscbir.change.cnn import stage_differences  # torch loads here
    from rscbir.models.features import stage_maps

    import torch

    model.eval()
    with torch.inference_mode():
        side = tiling.pixels(grid)[0]  # the patch side in pixels, also when it was given in ground units (320m)
        widths = [m.shape[1] for m in stage_maps(model, torch.zeros(1, before.count, side, side))]
    names = []
    for k, width in enumerate(widths):
        names.append(f"stage{k}:distance")
        names += [f"stage{k}:direction{j}" for j in range(width)] if k < DIRECTION_STAGES else []
    mosaic = PixelMosaic(grid, len(names))
    scale_after = radiometric_match(before, after, tiling, grid)
    for pairs in paired_patches(before, after, tiling, grid, batch=batch):
        mosaic.add(pairs.records, stage_differences(model, pairs.before, pairs.after, before.scale, scale_after, DIRECTION_STAGES))
    return mosaic.result(), names


def _band_residuals(before: Scene, after: Scene, tiling: TilingConfig, grid: Grid) -> np.ndarray:
    """(bands, H, W) signed residual of every band after the invariant-pixel regression, in robust SD units."""
    gain, offset, spread = invariant_regression(before, after, tiling, grid)
    mosaic = PixelMosaic(grid, before.count)
    for p in paired_patches(before, after, tiling, grid, batch=256):
        mosaic.add(p.records, (p.after - gain[None, :, None, None] * p.before - offset[None, :, None, None]) / spread[None, :, None, None])
    return mosaic.result()


__all__ = ["DIRECTION_STAGES", "EVIDENCE_VERSION", "PairEvidence", "default_cache", "evidence_key", "evidence_meta", "pair_evidence", "scene_evidence"]

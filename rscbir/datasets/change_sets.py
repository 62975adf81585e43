"""Labelled change pairs of either layout, read alike: OSCD city folders (``imgs_1/``, ``imgs_2/``, ``cm/``) or
image pairs (``A/``, ``B/``, ``label/``). Each pair comes with its change mask on the pair's common grid, which is
what training a change model and measuring one both need."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from rscbir.cache import cache_root
from rscbir.datasets.oscd import find_change_sets, oscd_labels_on
from rscbir.datasets.pairs import is_pair_layout, pair_label, pair_names, pair_scenes
from rscbir.errors import LabelError
from rscbir.grid import Grid
from rscbir.presets import Preset, SceneOptions
from rscbir.scene import Scene
from rscbir.tiling import aligned_grid


@dataclass
class LabelledPair:
    """Two dates of one place and where it changed: ``truth`` (H, W) bool on ``grid``, the pair's common grid."""

    name: str
    before: Scene
    after: Scene
    grid: Grid
    truth: np.ndarray
    preset: Preset | None = None  # the preset the scenes were opened with (its RGB bands feed the CNN)
    named_bands: bool = False  # bands named by a preset or --bands: dates with other band counts match by name


def change_set_names(root: str | os.PathLike) -> list[str]:
    """The labelled pairs under ``root``: OSCD city names, or the image names of an ``A/ B/ label/`` folder."""
    return pair_names(root) if is_pair_layout(root) else find_change_sets(root)


OSCD_PRESET = "sentinel2"  # OSCD cities are Sentinel-2 band files: read as `rscbir change --preset sentinel2` reads them
OSCD_PATCH, PAIRS_PATCH = 32, 64  # patch sides (px) the change figures of each layout are measured with


def change_set_defaults(root: str | os.PathLike, scene_options: SceneOptions = SceneOptions()) -> tuple[SceneOptions, int]:
    """How the pairs of ``root`` are read unless told otherwise: the scene options (OSCD cities with the Sentinel-2
    preset when none names their bands; image pairs need none) and the patch side in pixels."""
    if is_pair_layout(root):
        return scene_options, PAIRS_PATCH
    if scene_options.preset or scene_options.bands:
        return scene_options, OSCD_PATCH
    return dataclasses.replace(scene_options, preset=OSCD_PRESET), OSCD_PATCH


def labelled_pairs(root: str | os.PathLike, names: Sequence[str] | None = None, scene_options: SceneOptions = SceneOptions(),
                   workdir: str | os.PathLike | None = None) -> Iterator[LabelledPair]:  # fmt: skip
    """Each labelled pair of ``root`` (or only ``names``), opened as ``rscbir change BEFORE AFTER`` opens them with
    ``scene_options`` (OSCD cities; a preset such as ``sentinel2`` names their bands). Plain image pairs are written
    once as GeoTIFFs on a nominal grid into ``workdir`` (default: under the rscbir cache), so their evidence can
    be cached between runs."""
    root = Path(root)
    known = change_set_names(root)
    chosen = list(names) if names else known
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise LabelError(f"{root}: no labelled pair named {', '.join(unknown)} (it holds {', '.join(known[:12])}"
                         f"{' ...' if len(known) > 12 else ''})")  # fmt: skip
    if is_pair_layout(root):
        folder = Path(workdir) if workdir else _pair_workdir(root)
        folder.mkdir(parents=True, exist_ok=True)
        for name in chosen:
            before, after = pair_scenes(root, name, folder)
            yield LabelledPair(name, before, after, before.grid, pair_label(root, name, before.grid.shape))
        return
    for name in chosen:
        city = root / name
        (before, after), preset = scene_options.open([str(city / "imgs_1"), str(city / "imgs_2")])
        grid = aligned_grid([before, after])
        truth = oscd_labels_on(city, grid)
        if truth.shape != grid.shape:
            raise LabelError(f"{city}/cm: the change mask does not cover the pair's common grid ({truth.shape} vs {grid.shape})")
        yield LabelledPair(name, before, after, grid, truth, preset, bool(scene_options.preset or scene_options.bands))


def _pair_workdir(root: Path) -> Path:
    return cache_root() / "pairs" / hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]


__all__ = ["OSCD_PATCH", "OSCD_PRESET", "PAIRS_PATCH", "LabelledPair", "change_set_defaults", "change_set_names", "labelled_pairs"]

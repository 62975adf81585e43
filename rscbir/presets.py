"""Band presets: which scene bands a model reads as red, green, blue, and how to scale them.

Presets are YAML files in ``configs/`` (``naip``, ``sentinel2``, ``landsat``,
``rgb``) or any YAML path with the same keys: ``band_names`` (names for the bands
of multi-band files), ``rgb`` (three band names), ``all_bands`` (bands read with
``--all-bands``; default every band) and ``scale``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

from rscbir.errors import ModelError

CONFIG_DIRS = (Path(__file__).resolve().parents[1] / "configs", Path.cwd() / "configs")


@dataclass(frozen=True)
class Preset:
    """A band mapping from a preset file."""

    name: str
    rgb: tuple[str, str, str]
    band_names: tuple[str, ...] | None = None
    all_bands: tuple[str, ...] | None = None
    scale: str = "auto"


def available_presets() -> list[str]:
    names = {p.stem for d in CONFIG_DIRS if d.is_dir() for p in d.glob("*.yaml")}
    return sorted(names)


def load_preset(name_or_path: str | os.PathLike) -> Preset:
    """A preset by name (``naip``) or YAML path."""
    path = Path(name_or_path)
    if not path.is_file():
        candidates = [d / f"{name_or_path}.yaml" for d in CONFIG_DIRS]
        path = next((c for c in candidates if c.is_file()), None)  # type: ignore[assignment]
        if path is None:
            raise ModelError(f"unknown preset {name_or_path!r}; choose one of {', '.join(available_presets())} or a YAML path")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
        rgb = tuple(doc["rgb"])
        if len(rgb) != 3:
            raise ValueError("rgb needs three band names")
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: not a valid preset ({exc}); it needs at least `rgb: [R, G, B]`") from None
    return Preset(
        name=path.stem,
        rgb=rgb,  # type: ignore[arg-type]
        band_names=tuple(doc["band_names"]) if doc.get("band_names") else None,
        all_bands=tuple(doc["all_bands"]) if doc.get("all_bands") else None,
        scale=str(doc.get("scale", "auto")),
    )


def open_scenes(
    locations: Sequence[str | os.PathLike],
    preset: str | Preset | None = None,
    bands: Sequence[str | int] | None = None,
    band_names: Sequence[str] | None = None,
    scale: str | None = None,
    dates: Sequence[str] | None = None,
) -> tuple[list, Preset | None]:
    """Open scenes with a preset's band names and scaling as defaults.

    Returns the scenes and the preset (or None). Band names of a preset apply
    to multi-band files; band-file folders name their bands from file names.

    Examples
    --------
    >>> scenes, preset = open_scenes(["../shared/data/naip_timeseries/m_4709963_se_14_1_20090818.tif"], "naip")
    """
    from rscbir.scene import Scene

    chosen = load_preset(preset) if isinstance(preset, (str, os.PathLike)) else preset
    names = band_names or (list(chosen.band_names) if chosen and chosen.band_names else None)
    scaling = scale or (chosen.scale if chosen else "auto")
    scenes = []
    for i, location in enumerate(locations):
        is_file = Path(location).is_file()
        scenes.append(Scene.open(location, bands=bands, band_names=names if is_file else None, scaling=scaling,
                                 date=dates[i] if dates else None))  # fmt: skip
    return scenes, chosen

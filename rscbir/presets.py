"""Band presets: which scene bands a model reads as red, green, blue, and how to scale them.

Presets ship inside the package as YAML files in ``rscbir/configs/`` (``naip``,
``sentinel2``, ``landsat``, ``rgb``; the top-level ``configs/`` of a checkout is a
link to them, so there is one copy), or any YAML path with the same keys: ``band_names`` (names for the bands
of multi-band files), ``rgb`` (three band names), ``all_bands`` (bands read with
``--all-bands``; default every band) and ``scale``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Sequence

import yaml

from rscbir.errors import BandError, PresetError, RscbirError
from rscbir.dates import parse_date
from rscbir.scene import Scene, scene_locations
from rscbir.stac import is_stac, stac_locations


def _bundled() -> dict[str, Path]:
    """Preset name -> YAML file shipped as package data (works from a wheel, not only a checkout)."""
    folder = resources.files("rscbir") / "configs"
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


@dataclass(frozen=True)
class Preset:
    """A band mapping from a preset file."""

    name: str
    rgb: tuple[str, str, str]
    band_names: tuple[str, ...] | None = None
    all_bands: tuple[str, ...] | None = None
    scale: str = "auto"


def available_presets() -> list[str]:
    """Names of the presets shipped with rscbir."""
    return sorted(_bundled())


def load_preset(name_or_path: str | os.PathLike) -> Preset:
    """A preset by name (``naip``) or YAML path."""
    path = Path(name_or_path)
    if not path.is_file():
        path = _bundled().get(str(name_or_path))  # type: ignore[assignment]
        if path is None:
            raise PresetError(f"unknown preset {name_or_path!r}; choose one of {', '.join(available_presets())} or a YAML path")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
        rgb = tuple(doc["rgb"])
        if len(rgb) != 3:
            raise ValueError("rgb needs three band names")
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise PresetError(f"{path}: not a valid preset ({exc}); it needs at least `rgb: [R, G, B]`") from None
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
    chosen = load_preset(preset) if isinstance(preset, (str, os.PathLike)) else preset
    names = band_names or (list(chosen.band_names) if chosen and chosen.band_names else None)
    scaling = scale or (chosen.scale if chosen else "auto")
    scenes = []
    for i, location in enumerate(locations):
        is_file = Path(location).is_file()
        scenes.append(Scene.open(location, bands=bands, band_names=names if is_file else None, scaling=scaling,
                                 date=dates[i] if dates else None))  # fmt: skip
    return scenes, chosen


@dataclass(frozen=True)
class SceneOptions:
    """How to open scenes: a preset, band selection and names, scaling, dates (the CLI's scene options)."""

    preset: str | None = None
    bands: tuple[str, ...] | None = None
    band_names: tuple[str, ...] | None = None
    scale: str | None = None
    dates: tuple[str, ...] = ()

    def open(self, locations: Sequence[str | os.PathLike]) -> tuple[list[Scene], Preset | None]:
        """Open every location; any unreadable one is an error. With STAC input, ``dates`` keep the Items sensed on
        them (read from the Items, before any raster is opened) instead of dating each scene."""
        if self.dates and _all_stac(locations):
            return replace(self, dates=()).open(_stac_on_dates(locations, self.dates))
        locations = scene_locations(locations)
        if self.dates and len(self.dates) != len(locations):
            raise BandError(f"give --date once per scene ({len(locations)}), or not at all")
        return open_scenes(locations, self.preset, self.bands, self.band_names, self.scale, self.dates or None)

    def open_each(self, locations: Sequence[str | os.PathLike]) -> tuple[list[Scene], Preset | None, list[dict]]:
        """Open the locations one by one: unreadable ones are returned as failures, not raised
        (indexing many scenes goes on past one bad file). A single location still raises."""
        if self.dates and _all_stac(locations):
            return replace(self, dates=()).open_each(_stac_on_dates(locations, self.dates))
        locations = scene_locations(locations)
        if len(locations) == 1:
            scenes, preset = self.open(locations)
            return scenes, preset, []
        scenes, preset, failures = [], None, []
        for i, location in enumerate(locations):
            one = SceneOptions(self.preset, self.bands, self.band_names, self.scale, (self.dates[i],) if self.dates else ())
            try:
                found, preset = one.open([location])
                scenes += found
            except RscbirError as exc:
                failures.append({"scene": str(location), "error": str(exc)})
        if not scenes:
            raise BandError("no scene could be opened: " + "; ".join(f["error"] for f in failures))
        return scenes, preset, failures


def _all_stac(locations) -> bool:
    return bool(locations) and all(is_stac(os.fspath(location)) for location in locations)


def _stac_on_dates(locations, dates) -> list[str]:
    wanted = [parse_date(d) for d in dates]
    return [found for location in locations for found in stac_locations(os.fspath(location), wanted)]


def same_bands(after: Scene, before: Scene, named: bool) -> Scene:
    """``after`` read with ``before``'s bands; different band counts need names from a preset or --bands."""
    if after.count != before.count and (not named or set(before.band_names) - set(after.band_names)):
        raise BandError(
            f"{after.location}: has {after.count} bands ({', '.join(after.band_names)}), {before.location} has "
            f"{before.count} ({', '.join(before.band_names)}); pass --preset or --bands so both dates read the same bands"
        )
    return after.select(before.band_names)

"""Open a scene: one multi-band raster, or a folder/glob of single-band files.

A :class:`Scene` knows its band names, acquisition date, native grid and how to
scale raw counts to floats. Pixels are read lazily by window through a
:class:`SceneReader`, either on the scene's own grid or reprojected onto another
(a common grid shared with another date). Band files at mixed resolutions
(Sentinel-2 10/20/60 m) are stacked on the finest grid through ``WarpedVRT``;
the full stack is never materialised.
"""

from __future__ import annotations

import datetime as dt
import enum
import glob
import logging
import os
import re
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from rscbir.dates import DATE_TAGS, acquisition_date, normalise_date, parse_date
from rscbir.errors import BandError, CRSError, InvalidSceneError, NoOverlapError, ScalingError
from rscbir.grid import Grid, intersect_bounds
from rscbir.images import RASTER_SUFFIXES
from rscbir.stac import is_stac, item_bands, item_date, read_item, resolve_band_keys, stac_locations

log = logging.getLogger(__name__)

_S2_BAND = re.compile(r"^B(\d{1,2})([A-Z]?)$", re.IGNORECASE)


class ScalingMode(str, enum.Enum):
    """How raw pixel values become model-ready floats."""

    AUTO = "auto"  # uint8: divide by 255; other integers: percentile 2-98; floats: none
    NONE = "none"
    DIVIDE = "divide"
    PERCENTILE = "percentile"


@dataclass(frozen=True)
class Scaling:
    """Per-band scaling to float32 in roughly [0, 1].

    ``Scaling.parse("divide:10000")`` or ``Scaling.parse("percentile:2,98")``.
    """

    mode: ScalingMode = ScalingMode.AUTO
    divisor: float = 255.0
    low: float = 2.0
    high: float = 98.0

    @classmethod
    def parse(cls, text: str) -> "Scaling":
        """Parse ``auto``, ``none``, ``divide[:N]`` or ``percentile[:LO,HI]``."""
        name, _, arg = text.strip().partition(":")
        try:
            mode = ScalingMode(name.lower())
        except ValueError:
            raise ScalingError(f"unknown scaling {text!r}; use auto, none, divide:10000 or percentile:2,98") from None
        try:
            if mode is ScalingMode.DIVIDE:
                divisor = float(arg) if arg else 10000.0
                if not (np.isfinite(divisor) and divisor > 0):
                    raise ScalingError(f"scaling {text!r}: the divisor must be a positive number, e.g. divide:10000")
                return cls(mode, divisor=divisor)
            if mode is ScalingMode.PERCENTILE:
                low, high = (float(v) for v in arg.split(",")) if arg else (2.0, 98.0)
                if not 0 <= low < high <= 100:
                    raise ValueError
                return cls(mode, low=low, high=high)
        except ValueError:
            raise ScalingError(f"bad scaling argument in {text!r}; e.g. divide:10000 or percentile:2,98") from None
        return cls(mode)

    def to_dict(self) -> dict:
        return {"mode": self.mode.value, "divisor": self.divisor, "low": self.low, "high": self.high}

    @classmethod
    def from_dict(cls, doc: dict | None) -> "Scaling":
        doc = doc or {}
        return cls(ScalingMode(doc.get("mode", "auto")), doc.get("divisor", 255.0), doc.get("low", 2.0), doc.get("high", 98.0))

    def resolve(self, dtype: np.dtype) -> "Scaling":
        """Replace AUTO by the concrete rule for ``dtype``."""
        if self.mode is not ScalingMode.AUTO:
            return self
        dtype = np.dtype(dtype)
        if dtype == np.uint8:
            return Scaling(ScalingMode.DIVIDE, divisor=255.0)
        if np.issubdtype(dtype, np.integer):
            return Scaling(ScalingMode.PERCENTILE, low=2.0, high=98.0)
        return Scaling(ScalingMode.NONE)


@dataclass(frozen=True)
class BandSource:
    """One band of a scene: a file and a 1-based band index inside it."""

    path: str
    index: int
    name: str


@dataclass
class Scene:
    """A georeferenced scene of one acquisition date.

    Use :meth:`Scene.open`. ``grid`` is the native stacking grid (the finest
    band's grid for band-file folders).
    """

    scene_id: str
    sources: list[BandSource]
    grid: Grid
    dtype: np.dtype
    nodata: float | None
    date: dt.date | None = None
    scaling: Scaling = field(default_factory=Scaling)
    location: str = ""
    date_source: str = "none"  # where ``date`` was read (rscbir.dates)
    _stats: np.ndarray | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        location: str | os.PathLike,
        bands: Sequence[str | int] | None = None,
        date: str | dt.date | None = None,
        scene_id: str | None = None,
        scaling: Scaling | str | None = None,
        band_names: Sequence[str] | None = None,
    ) -> "Scene":
        """Open a raster file, a folder of band files, or a glob of band files.

        Parameters
        ----------
        location : path or glob
            A file rasterio can open (GeoTIFF, COG, VRT, ENVI ...), a folder of
            single-band files (one band each, named by the last ``_`` token of
            the file name, e.g. ``..._B04.tif`` -> ``B04``), or a glob pattern.
        bands : sequence of str or int, optional
            Band names or 1-based indexes to keep, in that order.
        date : str or date, optional
            Acquisition date (``YYYYMMDD`` or ``YYYY-MM-DD``). Default: read by
            :func:`rscbir.dates.acquisition_date` (a ``dates.txt`` sidecar, acquisition
            tags, the sensing date in a known file name; never a processing time).
        scene_id : str, optional
            Defaults to the file stem, or ``<parent>_<folder>`` for folders.
        scaling : Scaling or str, optional
            See :class:`Scaling`; default ``auto``.
        band_names : sequence of str, optional
            Names for the bands of a multi-band file (e.g. ``R,G,B,NIR``).

        Examples
        --------
        >>> scene = Scene.open("../shared/data/oscd/paris/imgs_1", bands=["B04", "B03", "B02"])
        """
        location = os.fspath(location)
        if is_stac(location):
            return cls._open_stac(location, bands, date, scene_id, scaling, band_names)
        paths = _expand(location)
        sources, grids, dtypes, nodatas, tags = [], {}, [], [], {}
        for path in paths:
            with _open_raster(path) as ds:
                grids[path] = _checked_grid(ds, path)
                dtypes.extend(ds.dtypes)
                nodatas.append(ds.nodata)
                tags.update({k: v for k, v in ds.tags().items() if k in DATE_TAGS})
                names = _band_names_for(path, ds, len(paths) > 1, band_names)
                sources.extend(BandSource(path, i + 1, n) for i, n in enumerate(names))
        if len(paths) > 1:
            sources.sort(key=lambda s: _band_sort_key(s.name))
        _check_unique([s.name for s in sources], location)

        grid = _finest_grid(grids, location)
        if bands:
            sources = _select(sources, bands, location)
        if isinstance(scaling, str):
            scaling = Scaling.parse(scaling)
        dtype = np.result_type(*dtypes)
        acquired = acquisition_date(location, paths, tags, date)
        return cls(
            scene_id=scene_id or _default_scene_id(location, paths),
            sources=sources,
            grid=grid,
            dtype=np.dtype(dtype),
            nodata=nodatas[0],
            date=acquired.date,
            scaling=(scaling or Scaling()).resolve(dtype),
            location=location,
            date_source=acquired.source,
        )

    @classmethod
    def _open_stac(cls, location: str, bands, date, scene_id, scaling, band_names) -> "Scene":
        """A STAC Item as a scene: its data assets' bands, its id, its datetime (see :mod:`rscbir.stac`)."""
        from dataclasses import replace

        described = item_bands(item := read_item(location), location)
        if band_names:  # names for the bands of a single multi-band asset, as for a multi-band file
            if len({b.href for b in described}) != 1 or len(band_names) != len(described):
                raise BandError(f"{location}: {len(band_names)} band names given for {len(described)} bands in "
                                f"{len({b.href for b in described})} asset(s); --band-names names the bands of one multi-band asset")  # fmt: skip
            described = [replace(b, name=n) for b, n in zip(described, band_names)]
        sources = [BandSource(b.href, b.index, b.name) for b in described]
        _check_unique([s.name for s in sources], location)
        grids, dtypes, nodatas = {}, [], []
        for path in dict.fromkeys(s.path for s in sources):
            with _open_raster(path) as ds:
                grids[path] = _checked_grid(ds, path)
                dtypes.extend(ds.dtypes)
                nodatas.append(ds.nodata)
        if bands:
            sources = _select(sources, resolve_band_keys(described, bands, location), location)
        if isinstance(scaling, str):
            scaling = Scaling.parse(scaling)
        dtype = np.result_type(*dtypes)
        when = parse_date(date, location) if date else item_date(item)
        return cls(scene_id=scene_id or item.id, sources=sources, grid=_finest_grid(grids, location), dtype=np.dtype(dtype),
                   nodata=nodatas[0], date=when, scaling=(scaling or Scaling()).resolve(dtype), location=location,
                   date_source="given (--date)" if date else ("STAC item datetime" if when else "none"))  # fmt: skip

    # --------------------------------------------------------------- properties
    @property
    def band_names(self) -> list[str]:
        return [s.name for s in self.sources]

    @property
    def count(self) -> int:
        return len(self.sources)

    @property
    def paths(self) -> list[str]:
        return sorted({s.path for s in self.sources})

    @property
    def fill_value(self) -> float:
        """Value used for pixels outside the data (padding, reprojection edges)."""
        return 0 if self.nodata is None else self.nodata

    def to_dict(self) -> dict:
        """A JSON-able record from which :meth:`from_dict` reopens exactly this scene."""
        return {
            "scene_id": self.scene_id,
            "location": self.location,
            "date": self.date.isoformat() if self.date else None,
            "date_source": self.date_source,
            "bands": self.band_names,
            "sources": [[s.path, s.index, s.name] for s in self.sources],
            "scaling": self.scaling.to_dict(),
            "band_stats": self.band_stats().tolist() if self.scaling.mode is ScalingMode.PERCENTILE else None,
        }

    @classmethod
    def from_dict(cls, doc: dict) -> "Scene":
        """Reopen a scene recorded by :meth:`to_dict` (same files, bands, scaling and statistics)."""
        base = cls.open(doc["location"], date=doc.get("date"), scene_id=doc["scene_id"])
        sources = [BandSource(path, int(index), name) for path, index, name in doc["sources"]]
        missing = [s.path for s in sources if not Path(s.path).is_file()]
        if missing:
            raise InvalidSceneError(f"{missing[0]}: file recorded for scene {doc['scene_id']!r} is missing")
        scaling = Scaling.from_dict(doc.get("scaling"))
        stats = np.asarray(doc["band_stats"], dtype=np.float64) if doc.get("band_stats") else None
        from dataclasses import replace

        return replace(base, sources=sources, scaling=scaling.resolve(base.dtype), _stats=stats,
                       date_source=doc.get("date_source", "recorded in the index"))

    def describe(self) -> dict:
        """What rscbir sees in this scene (id, date, bands, dtype, nodata, grid, scaling, files), JSON-ready."""
        grid = self.grid
        return {
            "scene_id": self.scene_id,
            "date": self.date.isoformat() if self.date else None,
            "date_source": self.date_source,
            "bands": self.band_names,
            "dtype": str(self.dtype),
            "nodata": self.nodata,
            "crs": grid.crs.to_string(),
            "width": grid.width,
            "height": grid.height,
            "res": list(grid.res),
            "bounds": list(grid.bounds),
            "scaling": self.scaling.mode.value,
            "files": self.paths,
        }

    def select(self, bands: Sequence[str | int]) -> "Scene":
        """A copy of this scene restricted to ``bands`` (names or 1-based indexes), in that order."""
        from dataclasses import replace

        chosen = _select(self.sources, bands, self.location or self.scene_id)
        stats = None
        if self._stats is not None:
            stats = self._stats[[self.sources.index(s) for s in chosen]]
        return replace(self, sources=chosen, _stats=stats)

    def reader(self, grid: Grid | None = None, resampling: Resampling = Resampling.bilinear) -> "SceneReader":
        """A context manager that reads windows of this scene on ``grid``.

        ``grid`` defaults to the scene's own grid. Any other grid (another CRS,
        resolution, a crop, a one-row shift) is served by reprojection.
        """
        return SceneReader(self, grid or self.grid, resampling)

    # ------------------------------------------------------------------ scaling
    def band_stats(self) -> np.ndarray:
        """(count, 2) low/high percentiles per band, estimated once from a sample."""
        if self._stats is None:
            scaling = self.scaling
            self._stats = np.array(
                [_percentiles(s, self.nodata, scaling.low, scaling.high) for s in self.sources],
                dtype=np.float64,
            )
        return self._stats

    def scale(self, data: np.ndarray) -> np.ndarray:
        """Raw (bands, h, w) values -> float32 by this scene's scaling rule."""
        stats = self.band_stats() if self.scaling.mode is ScalingMode.PERCENTILE else None
        return apply_scaling(data, self.scaling, stats)


class SceneReader:
    """Reads windows of a scene on a target grid; open it with ``with``."""

    def __init__(self, scene: Scene, grid: Grid, resampling: Resampling) -> None:
        self.scene = scene
        self.grid = grid
        self.resampling = resampling
        self._stack = ExitStack()
        self._groups: list[tuple[object, str, list[int], list[int]]] = []

    def __enter__(self) -> "SceneReader":
        by_path: dict[str, tuple[list[int], list[int]]] = {}
        for position, source in enumerate(self.scene.sources):
            indexes, positions = by_path.setdefault(source.path, ([], []))
            indexes.append(source.index)
            positions.append(position)
        for path, (indexes, positions) in by_path.items():
            ds = self._stack.enter_context(_open_raster(path))
            if not Grid.from_dataset(ds).same_as(self.grid):
                ds = self._stack.enter_context(
                    WarpedVRT(
                        ds,
                        crs=self.grid.crs,
                        transform=self.grid.transform,
                        width=self.grid.width,
                        height=self.grid.height,
                        resampling=self.resampling,
                        nodata=self.scene.fill_value,
                    )
                )
            self._groups.append((ds, path, indexes, positions))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
        self._groups.clear()

    def read(self, window: Window) -> np.ndarray:
        """Raw values (bands, height, width) of ``window`` on the target grid.

        Parts of the window outside the grid are filled with the scene's nodata
        (or 0), so edge patches can be padded.
        """
        height, width = int(window.height), int(window.width)
        out = np.full((self.scene.count, height, width), self.scene.fill_value, dtype=self.scene.dtype)
        col0, row0 = max(0, int(window.col_off)), max(0, int(window.row_off))
        col1 = min(self.grid.width, int(window.col_off) + width)
        row1 = min(self.grid.height, int(window.row_off) + height)
        if col1 <= col0 or row1 <= row0:
            return out
        inner = Window(col0, row0, col1 - col0, row1 - row0)
        r, c = row0 - int(window.row_off), col0 - int(window.col_off)
        for ds, path, indexes, positions in self._groups:
            try:
                block = ds.read(indexes, window=inner)
            except RasterioError as exc:
                raise InvalidSceneError(f"{path}: cannot read pixels ({exc}); the file may be truncated or corrupt") from None
            out[positions, r : r + inner.height, c : c + inner.width] = block
        return out

    def valid_mask(self, data: np.ndarray) -> np.ndarray:
        """(h, w) bool: pixels where any band holds data.

        A pixel is missing when every band equals nodata (NaN for floats), or
        every band is 0 when the scene declares no nodata (all-zero fill).
        """
        nodata = self.scene.fill_value
        if isinstance(nodata, float) and np.isnan(nodata):
            missing = np.isnan(data)
        else:
            missing = data == nodata
        return ~missing.all(axis=0)


# ---------------------------------------------------------------------- helpers
def scene_locations(locations: Sequence[str | os.PathLike]) -> list[str]:
    """One location per scene: a glob that matches several multi-band rasters means one scene per file.

    A folder or glob of single-band files is one scene (its bands); a quoted glob such as
    ``'naip/*.tif'`` over ten four-band files is ten scenes, never one 40-band stack. A glob that mixes
    single- and multi-band files is refused.
    """
    out: list[str] = []
    for location in map(os.fspath, locations):
        if is_stac(location):  # an Item, or every Item of an ItemCollection, Collection or Catalog
            out.extend(stac_locations(location) if "#" not in location else [location])
            continue
        if Path(location).exists() or not any(ch in location for ch in "*?["):
            out.append(location)
            continue
        files = _expand(location)
        counts = []
        for path in files:
            with _open_raster(path) as ds:
                counts.append(ds.count)
        if len(files) > 1 and all(c > 1 for c in counts):
            out.extend(files)
        elif len(files) > 1 and any(c > 1 for c in counts):
            multi = [Path(f).name for f, c in zip(files, counts) if c > 1]
            raise BandError(
                f"{location}: matches single-band files and multi-band files ({', '.join(multi[:3])}); a pattern is either "
                "the band files of one scene or one scene per multi-band file"
            )
        else:
            out.append(location)
    return out


def _expand(location: str) -> list[str]:
    path = Path(location)
    if path.is_dir():
        files = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES and p.is_file())
        if not files:
            raise InvalidSceneError(f"{location}: folder holds no raster files ({', '.join(RASTER_SUFFIXES)})")
        return files
    if path.exists():
        return [str(path)]
    if any(ch in location for ch in "*?["):
        files = sorted(p for p in glob.glob(location) if Path(p).is_file())
        if not files:
            raise InvalidSceneError(f"{location}: the pattern matches no files")
        return files
    raise InvalidSceneError(f"{location}: no such file or folder")


def _open_raster(path: str):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioError as exc:
        raise InvalidSceneError(f"{path}: not a readable raster ({exc})") from None


def _checked_grid(ds, path: str) -> Grid:
    if ds.crs is None:
        raise CRSError(f"{path}: raster has no CRS; assign one, e.g. `rio edit-info --crs EPSG:32618 {path}`")
    if ds.transform.is_identity and not ds.gcps[0]:
        raise CRSError(f"{path}: raster has no geotransform; georeference it (e.g. gdal_translate -a_ullr) first")
    if ds.transform.b != 0 or ds.transform.d != 0:
        raise CRSError(f"{path}: rotated geotransforms are not supported; warp it north-up with gdalwarp first")
    return Grid.from_dataset(ds)


def _band_names_for(path: str, ds, is_folder: bool, override: Sequence[str] | None) -> list[str]:
    if override and not is_folder:
        if len(override) != ds.count:
            raise BandError(f"{path}: {len(override)} band names given for {ds.count} bands")
        return list(override)
    if is_folder:
        token = Path(path).stem.split("_")[-1]
        return [token] if ds.count == 1 else [f"{token}_{i + 1}" for i in range(ds.count)]
    return [desc or f"B{i + 1}" for i, desc in enumerate(ds.descriptions)]


def _band_sort_key(name: str) -> tuple:
    match = _S2_BAND.match(name)
    if match:  # Sentinel-2 order: B01 .. B08, B8A, B09 ..
        return (0, int(match.group(1)), match.group(2).upper(), name)
    return (1, 0, "", name)


def _check_unique(names: list[str], location: str) -> None:
    seen = {n for n in names if names.count(n) > 1}
    if seen:
        raise BandError(f"{location}: band names {sorted(seen)} occur twice; keep one file per band")


def _finest_grid(grids: dict[str, Grid], location: str) -> Grid:
    path, finest = min(grids.items(), key=lambda item: item[1].res[0] * item[1].res[1])
    for other_path, grid in grids.items():
        if intersect_bounds(finest.bounds, grid.bounds_in(finest.crs)) is None:
            raise NoOverlapError(
                f"{location}: band file {other_path} does not overlap {path}; "
                "a scene's band files must cover the same area"
            )
    return finest


def _select(sources: list[BandSource], bands: Sequence[str | int], location: str) -> list[BandSource]:
    by_name = {s.name.lower(): s for s in sources}
    chosen = []
    for band in bands:
        key = str(band).strip()
        if key.isdigit():
            index = int(key)
            if not 1 <= index <= len(sources):
                raise BandError(f"{location}: band {index} out of range; the scene has bands 1..{len(sources)}")
            chosen.append(sources[index - 1])
        elif key.lower() in by_name:
            chosen.append(by_name[key.lower()])
        else:
            raise BandError(f"{location}: no band named {key!r}; available: {', '.join(s.name for s in sources)}")
    return chosen


def _default_scene_id(location: str, paths: list[str]) -> str:
    path = Path(location)
    if len(paths) == 1 and path.is_file():
        return path.stem
    folder = path if path.is_dir() else Path(paths[0]).parent
    folder = folder.resolve()
    return f"{folder.parent.name}_{folder.name}" if folder.parent.name else folder.name


def apply_scaling(data: np.ndarray, scaling: Scaling, stats: np.ndarray | None = None) -> np.ndarray:
    """Raw (bands, h, w) values -> float32; ``stats`` are the (bands, 2) percentiles for PERCENTILE."""
    out = data.astype(np.float32, copy=True)
    if scaling.mode is ScalingMode.DIVIDE:
        out /= np.float32(scaling.divisor)
    elif scaling.mode is ScalingMode.PERCENTILE and stats is not None:
        stats = np.asarray(stats, dtype=np.float32)
        low, high = stats[:, 0, None, None], stats[:, 1, None, None]
        out = np.clip((out - low) / np.maximum(high - low, 1e-6), 0.0, 1.0)
    return out


def _percentiles(source: BandSource, nodata: float | None, low: float, high: float, max_side: int = 1024) -> tuple[float, float]:
    """Band percentiles from overviews, or from a sample of windows when there are none."""
    with _open_raster(source.path) as ds:
        has_overviews = bool(ds.overviews(source.index))
        if has_overviews or ds.width * ds.height <= 4 * max_side * max_side:
            scale = max(1.0, max(ds.width, ds.height) / max_side)
            shape = (max(1, int(ds.height / scale)), max(1, int(ds.width / scale)))
            sample = ds.read(source.index, out_shape=shape).ravel()
        else:
            rng = np.random.default_rng(0)
            side = 256
            rows = rng.integers(0, ds.height - side, 32)
            cols = rng.integers(0, ds.width - side, 32)
            sample = np.concatenate(
                [ds.read(source.index, window=Window(int(c), int(r), side, side)).ravel() for r, c in zip(rows, cols)]
            )
    fill = 0 if nodata is None else nodata
    sample = sample[(sample != fill) & np.isfinite(sample)]
    if sample.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(sample, [low, high])
    return (float(lo), float(hi) if hi > lo else float(lo) + 1.0)

"""Checks of coordinates, boxes and dates given by a user, made once at the edge (CLI, serve API, library).

Each returns the checked value or raises a :class:`~rscbir.errors.QueryError` (or ``DateError``) whose
message names the value and what would be right, so ``--lonlat nan nan`` is one line, not a traceback.
"""

from __future__ import annotations

import math
from typing import Sequence

from rscbir.dates import parse_date
from rscbir.errors import QueryError


def finite(value: float, name: str) -> float:
    """``value`` as a float, refused when NaN or infinite."""
    value = float(value)
    if not math.isfinite(value):
        raise QueryError(f"{name} must be a finite number, not {value}")
    return value


def lonlat(lon: float, lat: float) -> tuple[float, float]:
    """A point on Earth: finite, lon in -180..180, lat in -90..90."""
    lon, lat = finite(lon, "lon"), finite(lat, "lat")
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise QueryError(f"lon {lon}, lat {lat} is not a point on Earth (lon -180..180, lat -90..90)")
    return lon, lat


def xy(x: float, y: float) -> tuple[float, float]:
    """Projected coordinates: both finite."""
    return finite(x, "x"), finite(y, "y")


def bbox(box: Sequence[float]) -> tuple[float, float, float, float]:
    """A lon/lat box (west, south, east, north): finite, on Earth, west < east and south < north."""
    if len(box) != 4:
        raise QueryError(f"a box is W S E N (four numbers), not {list(box)}")
    west, south, east, north = (finite(v, name) for v, name in zip(box, ("west", "south", "east", "north")))
    lonlat(west, south), lonlat(east, north)
    if west >= east or south >= north:
        raise QueryError(f"box W S E N = {west} {south} {east} {north}: west must be < east and south < north")
    return west, south, east, north


def dates(values: Sequence[str], name: str = "--date") -> tuple[str, ...]:
    """Dates in any spelling :func:`rscbir.dates.parse_date` reads, as ISO strings."""
    return tuple(parse_date(v, name).isoformat() for v in values)

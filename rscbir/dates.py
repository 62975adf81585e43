"""Acquisition dates: read from what says when the ground was sensed, never from a processing time.

A change between dates is only as right as its dates. The sources, in the order trusted:

1. the date given by the user (``--date``);
2. a ``dates.txt`` sidecar beside the files (the OSCD layout: ``date_1: 20150821`` for ``imgs_1/``,
   or ``NAME: DATE`` for a file or folder called NAME);
3. an acquisition tag in the raster (``ACQUISITIONDATETIME``, ``DATE_ACQUIRED`` ...);
4. the sensing date in a file name of a known format (current Sentinel-2 tiles ``T31UDQ_20171107T105229_B01``,
   Sentinel-2 products ``S2A_MSIL1C_<sensing>_N..._<discriminator>``, Landsat ``LC08_L1TP_..._<acquired>_<processed>``,
   NAIP ``m_..._20090818``), or the one date in a name of no known format; a stem whose only digits
   are a past year (``1985.tif``, ``pucallpa_1985.tif``: an annual composite) is taken as 1 January of it;
5. the TIFF creation time (``TIFFTAG_DATETIME``), for files made straight from the sensor.

A name whose only date is a processing time (the older Sentinel-2 naming
``S2A_OPER_MSI_L1C_TL_EPA__20160706T155721_A000849_T30UWU_B01``, whose date is when the granule was
made) or that holds several dates of no known format gives no date; if nothing else does either, a
:class:`~rscbir.errors.DateError` asks for ``--date`` rather than guess.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from rscbir.errors import DateError
from rscbir.images import RASTER_SUFFIXES

ACQUISITION_TAGS = ("ACQUISITIONDATETIME", "ACQUISITION_DATE", "DATE_ACQUIRED", "SENSING_TIME", "DATATAKE_SENSING_START")
CREATION_TAG = "TIFFTAG_DATETIME"
DATE_TAGS = (*ACQUISITION_TAGS, CREATION_TAG)
SIDECAR = "dates.txt"

_DATE = r"((?:19|20)\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])"
_ANY_DATE = re.compile(rf"(?<!\d){_DATE}(?!\d)")
_YEAR_ONLY = re.compile(r"[^\d]*((?:19|20)\d{2})[^\d]*")  # a stem whose only digits are a year
# known names: (what the format is, pattern whose first three groups are the sensing date)
_SENSING_NAMES = (
    ("Sentinel-2 product", re.compile(rf"S2[A-D]_MSIL(?:1C|2A)_{_DATE}T\d{{6}}_N\d{{4}}", re.IGNORECASE)),
    ("Sentinel-2 validity start", re.compile(rf"S2[A-D]_OPER_\w*?_V{_DATE}T\d{{6}}", re.IGNORECASE)),
    ("Sentinel-2 tile", re.compile(rf"(?<![A-Z0-9])T\d{{2}}[A-Z]{{3}}_{_DATE}T\d{{6}}", re.IGNORECASE)),
    ("Landsat", re.compile(rf"L[COTEM]0\d_L[12][A-Z0-9]{{2}}_\d{{6}}_{_DATE}_\d{{8}}_\d{{2}}_[A-Z0-9]{{2}}", re.IGNORECASE)),
)
# names whose only date is a processing or creation time
_PROCESSING_NAMES = (("Sentinel-2 OPER (processing time)", re.compile(r"S2[A-D]_OPER_", re.IGNORECASE)),)


@dataclass(frozen=True)
class AcquisitionDate:
    """A sensing date and where it was read (``source``), shown by ``rscbir info``."""

    date: dt.date | None
    source: str = "none"

    def isoformat(self) -> str | None:
        return self.date.isoformat() if self.date else None


def parse_date(value: str | dt.date, location: str = "date") -> dt.date:
    """A date from ``YYYYMMDD``, ``YYYY-MM-DD`` or ``YYYY:MM:DD`` (TIFF tags); a time after it is ignored."""
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    for fmt in ("%Y%m%d", "%Y-%m-%d", "%Y:%m:%d"):
        try:
            return dt.datetime.strptime(text[: len(dt.date(2000, 1, 1).strftime(fmt))], fmt).date()
        except ValueError:
            continue
    raise DateError(f"{location}: cannot read date {value!r}; use YYYYMMDD or YYYY-MM-DD")


def normalise_date(value: str | dt.date) -> str:
    """``YYYY-MM-DD`` from any date spelling :func:`parse_date` reads (the form catalogs store)."""
    return parse_date(value).isoformat()


def date_in_name(name: str) -> tuple[dt.date | None, str | None]:
    """(sensing date, format) read from one file or folder name; (None, why not) when the name has dates
    that are not a sensing date; (None, None) when it has no date at all."""
    for label, pattern in _SENSING_NAMES:
        match = pattern.search(name)
        if match:
            return _valid(match.groups()[:3]), f"name ({label})"
    for label, pattern in _PROCESSING_NAMES:
        if pattern.search(name) and _ANY_DATE.search(name):
            return None, label
    found = {_valid(m.groups()) for m in _ANY_DATE.finditer(name)} - {None}
    if len(found) == 1:
        return found.pop(), "name"
    if len(found) > 1:
        return None, f"several dates ({', '.join(sorted(d.isoformat() for d in found))})"
    year = _YEAR_ONLY.fullmatch(Path(name).stem if Path(name).suffix.lower() in RASTER_SUFFIXES else name)
    if year and int(year.group(1)) <= dt.date.today().year:
        return dt.date(int(year.group(1)), 1, 1), "name (year only: an annual composite, taken as 1 January)"
    return None, None


def sidecar_date(location: str | Path, paths: Iterable[str] = ()) -> AcquisitionDate | None:
    """The date a ``dates.txt`` beside ``location`` (or in its parent folder) gives it, if any.

    Keys are ``date_N`` for a folder ``imgs_N`` (the OSCD layout) or the file/folder name or stem.
    """
    path = Path(location)
    if not path.exists():  # a glob: the folder its files are in
        first = next(iter(paths), None)
        if first is None:
            return None
        path = Path(first).parent
    entries = [path] if path.is_dir() else [path, path.parent]
    keys = set()
    for entry in entries:
        keys |= {entry.name, entry.stem}
        match = re.fullmatch(r"imgs_(\d+)", entry.name)
        if match:
            keys.add(f"date_{match.group(1)}")
    for folder in dict.fromkeys([entries[-1], entries[-1].parent]):
        sidecar = folder / SIDECAR
        if not sidecar.is_file():
            continue
        for line in sidecar.read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() in keys and value.strip():
                return AcquisitionDate(parse_date(value.strip(), str(sidecar)), f"{sidecar} ({key.strip()})")
    return None


def acquisition_date(location: str, paths: Iterable[str], tags: dict[str, str], given: str | dt.date | None = None) -> AcquisitionDate:
    """The sensing date of a scene at ``location`` made of ``paths`` with raster ``tags``; see the module's order.

    Raises
    ------
    DateError
        When the names carry only processing times (or conflicting dates) and nothing else gives a date.
    """
    paths = list(paths)
    if given:
        return AcquisitionDate(parse_date(given, location), "given (--date)")
    sidecar = sidecar_date(location, paths)
    if sidecar is not None:
        return sidecar
    for key in ACQUISITION_TAGS:
        if key in tags:
            try:
                return AcquisitionDate(parse_date(tags[key], location), f"tag {key}")
            except DateError:
                continue
    refused = []
    names = list(dict.fromkeys([Path(location).name, *(Path(p).name for p in paths)]))
    for name in names:
        date, how = date_in_name(name)
        if date is not None:
            return AcquisitionDate(date, how)
        if how is not None:
            refused.append(f"{name}: {how}")
    if CREATION_TAG in tags and not refused:
        try:
            return AcquisitionDate(parse_date(tags[CREATION_TAG], location), f"tag {CREATION_TAG}")
        except DateError:
            pass
    if refused:
        raise DateError(
            f"{location}: no sensing date found ({refused[0]} is not when the ground was sensed); "
            f"give it with --date YYYYMMDD or a {SIDECAR} beside the files"
        )
    return AcquisitionDate(None)


def _valid(groups) -> dt.date | None:
    try:
        return dt.date(*(int(g) for g in groups))
    except ValueError:
        return None

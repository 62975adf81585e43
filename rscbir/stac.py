"""STAC in: a local STAC Item, ItemCollection, Collection or Catalog JSON wherever a scene path is accepted.

Each Item is one scene. Its bands are its data assets' ``eo:bands`` (STAC 1.0) or ``bands`` (STAC 1.1), in asset
order, named by the band ``name`` and also found by ``common_name`` (``--bands red,green,blue,nir``); an asset
without band metadata is one band named by its key. Hrefs may be relative (to the JSON that holds them) or absolute;
the date is the Item's ``datetime`` (or ``start_datetime``). A scene location ``items.json#ITEM_ID`` names one Item of
an ItemCollection (a search result saved to a file). Filters by date and bounding box apply to the Items' own
metadata, before any raster is opened.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from rscbir.errors import BandError, InvalidSceneError
from rscbir.images import RASTER_SUFFIXES

SKIPPED_ROLES = {"thumbnail", "overview", "metadata", "visual-preview"}


@dataclass(frozen=True)
class StacBand:
    """One band of an Item: the file (absolute href), 1-based index in it, name and common name."""

    href: str
    index: int
    name: str
    common_name: str | None


def is_stac(location: str) -> bool:
    """A local JSON file (or ``file.json#item``) whose ``type``/``stac_version`` say it is STAC."""
    path = Path(str(location).split("#", 1)[0])
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        with open(path) as handle:
            head = json.load(handle)
    except (OSError, ValueError):
        return False
    return isinstance(head, dict) and ("stac_version" in head or head.get("type") == "FeatureCollection")


def stac_locations(location: str, dates: Sequence[dt.date] = (), bbox: Sequence[float] | None = None) -> list[str]:
    """One scene location per Item in a STAC file, keeping those sensed on ``dates`` and meeting ``bbox``
    (W, S, E, N in degrees) when given; nothing but JSON is read."""
    items = [(item, where) for item, where in _items(location)]
    kept = [where for item, where in items if _wanted(item, dates, bbox)]
    if not kept:
        sensed = sorted({d.isoformat() for d in (_date(i) for i, _ in items) if d})
        raise InvalidSceneError(f"{location}: no STAC item matches the date or box asked for "
                                f"({len(items)} items; dates {', '.join(sensed) or 'none'})")  # fmt: skip
    return kept


def read_item(location: str):
    """The pystac Item a scene location names (``item.json`` or ``collection.json#ITEM_ID``)."""
    import pystac

    path, _, item_id = str(location).partition("#")
    if not item_id:
        try:
            return pystac.Item.from_file(path)
        except Exception as exc:  # pystac raises many kinds for a file that is not an Item
            raise InvalidSceneError(f"{location}: not a readable STAC Item ({exc})") from None
    for item, _ in _items(path):
        if item.id == item_id:
            return item
    raise InvalidSceneError(f"{location}: no STAC item {item_id!r} in {path}")


def item_bands(item, location: str) -> list[StacBand]:
    """Every band of an Item's data assets, with absolute hrefs; a missing file is named."""
    bands = []
    for key, asset in item.assets.items():
        roles = set(asset.roles or [])
        if roles & SKIPPED_ROLES and "data" not in roles:
            continue
        described = asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands")
        if not described and not _is_raster(asset):
            continue
        href = asset.get_absolute_href() or asset.href
        if "://" in href and not href.startswith("file://"):
            raise InvalidSceneError(f"{location}: asset {key!r} is at {href}; rscbir reads local files: download it first")
        href = href.removeprefix("file://")
        if not Path(href).is_file():
            raise InvalidSceneError(f"{location}: asset {key!r} points to {href}, which does not exist")
        for i, band in enumerate(described or [{}]):
            common = band.get("common_name") or band.get("eo:common_name")
            name = band.get("name") or common or (key if not described or len(described) == 1 else f"{key}_{i + 1}")
            bands.append(StacBand(href, i + 1, name, common))
    if not bands:
        raise BandError(f"{location}: the STAC item has no data asset with bands (assets: {', '.join(item.assets) or 'none'})")
    return bands


def resolve_band_keys(bands: Sequence[StacBand], wanted: Sequence[str | int], location: str) -> list[str | int]:
    """``wanted`` with common names (red, nir ...) replaced by the band names they stand for; an unknown one names
    the bands the Item has."""
    names = {b.name.lower() for b in bands}
    common = {b.common_name.lower(): b.name for b in bands if b.common_name}
    out = []
    for key in wanted:
        text = str(key).strip()
        if text.isdigit() or text.lower() in names:
            out.append(key)
        elif text.lower() in common:
            out.append(common[text.lower()])
        else:
            has = ", ".join(f"{b.name} ({b.common_name})" if b.common_name else b.name for b in bands)
            raise BandError(f"{location}: the STAC item has no band {text!r}; it has {has}")
    return out


def item_date(item) -> dt.date | None:
    return _date(item)


def _items(location: str):
    """(Item, scene location) for every Item a STAC file holds or links to."""
    import pystac

    path = Path(str(location).split("#", 1)[0])
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidSceneError(f"{location}: not a readable STAC JSON ({exc})") from None
    try:
        if doc.get("type") == "Feature":
            item = pystac.Item.from_dict(doc)
            item.set_self_href(str(path.resolve()))
            yield item, str(path)
        elif doc.get("type") == "FeatureCollection":
            collection = pystac.ItemCollection.from_file(str(path))
            for item in collection:
                yield item, f"{path}#{item.id}"
        else:  # Catalog or Collection: walk its links
            catalog = pystac.read_file(str(path))
            for item in catalog.get_items(recursive=True):
                self_href = item.get_self_href()
                yield item, self_href if self_href and Path(self_href).is_file() else f"{path}#{item.id}"
    except InvalidSceneError:
        raise
    except Exception as exc:  # pystac: a broken link, a file that is not STAC
        raise InvalidSceneError(f"{location}: not a readable STAC file ({type(exc).__name__}: {exc})") from None


def _wanted(item, dates: Sequence[dt.date], bbox: Sequence[float] | None) -> bool:
    if dates and _date(item) not in set(dates):
        return False
    if bbox is not None and item.bbox is not None:
        west, south, east, north = bbox
        iw, is_, ie, in_ = item.bbox[:4] if len(item.bbox) == 4 else (item.bbox[0], item.bbox[1], item.bbox[3], item.bbox[4])
        if iw > east or ie < west or is_ > north or in_ < south:
            return False
    return True


def _date(item) -> dt.date | None:
    when = item.datetime or item.common_metadata.start_datetime
    return when.date() if when else None


def _is_raster(asset) -> bool:
    kind = (asset.media_type or "").lower()
    return "tiff" in kind or "jp2" in kind or Path(asset.href.split("?")[0]).suffix.lower() in RASTER_SUFFIXES


__all__ = ["StacBand", "is_stac", "stac_locations", "read_item", "item_bands", "resolve_band_keys", "item_date"]

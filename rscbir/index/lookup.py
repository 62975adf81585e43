"""What a query asks of the catalog, answered from small per-segment arrays instead of the whole table.

A query needs, for the few patches it touches, their id, scene, date, row, col and footprint; and
for a filter, which ids lie in a box, on a date, in a scene. Each segment keeps two files for that,
written beside its GeoParquet catalog:

    segment-N-lookup.npy   one record per patch in id order: scene code, row, col, the lon/lat box
                           (float32, rounded outward) and the four footprint corners (float64)
    segment-N-cells.npy    (2, n) int64: the lon/lat cell key of each patch centre, sorted, over
                           the ids in that order; a box query reads the cells it covers, never
                           the other patches

Both are read with ``pread`` (:class:`rscbir.index.rows.NpyRows`): opening costs nothing per patch and a
query copies only the records it touches, so memory stays bounded at any index size. The segment record in the manifest
holds the scene list with each scene's id ranges, the cell size and the footprint reach.
Segments written before these files existed get the same arrays built in memory from the catalog.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import geopandas as gpd
import numpy as np
import shapely

from rscbir.catalog import geodesic_metres
from rscbir.index.rows import NpyRows

PATCH = np.dtype([("scene", "<i4"), ("row", "<i4"), ("col", "<i4"), ("box", "<f4", (4,)), ("corners", "<f8", (8,))])
CELLS_PER_PATCH = 4  # a cell spans about this many patch widths: a small box reads a few cells of ~16 patches
BISECT_LIMIT = 64  # cell rows a box query finds by binary search in the file; more read the keys whole (8 B a patch)


def _outward(values: np.ndarray, direction: float) -> np.ndarray:
    """float32 of ``values`` rounded away from them in ``direction`` (-inf or +inf), so a box never shrinks."""
    rounded = values.astype(np.float32)
    return np.where(rounded.astype(np.float64) * direction < values * direction, np.nextafter(rounded, np.float32(direction)), rounded)


@dataclass
class SegmentLookup:
    """The lookup arrays of one segment; ids are local (0 .. count-1)."""

    patches: np.ndarray | NpyRows  # PATCH records, in id order
    cells: np.ndarray | NpyRows  # (2, n) int64: sorted cell keys, the ids in that order
    scene_ids: list[str]  # scene code -> scene id
    ranges: dict[str, list[tuple[int, int]]]  # scene id -> [start, stop) id ranges
    cell: float  # degrees
    reach: float  # degrees: the largest distance from a patch's centre to its box edge
    bounds: tuple[float, float, float, float]
    scene_bounds: dict[str, tuple[float, float, float, float]]  # scene id -> its patches' (west, south, east, north)
    ordered: bool  # each scene's ids run in (row, col) order: patch ids are found by binary search

    # ------------------------------------------------------------------ writing
    @classmethod
    def from_catalog(cls, frame: gpd.GeoDataFrame) -> "SegmentLookup":
        """The lookup of a segment's catalog rows (in id order)."""
        n = len(frame)
        scene_ids = list(dict.fromkeys(frame["scene_id"].astype(str)))
        codes = frame["scene_id"].astype(str).map({s: i for i, s in enumerate(scene_ids)}).to_numpy(np.int32)
        patches = np.zeros(n, PATCH)
        patches["scene"] = codes
        patches["row"] = frame["row"].to_numpy(np.int32)
        patches["col"] = frame["col"].to_numpy(np.int32)
        rings = shapely.get_exterior_ring(frame.geometry.values)
        four_corners = bool(n) and bool((shapely.get_num_coordinates(rings) == 5).all())
        corners = shapely.get_coordinates(rings).reshape(n, 5, 2)[:, :4, :] if four_corners else np.zeros((0, 4, 2))
        if n and not four_corners:  # a footprint that is not a reprojected box (never written by rscbir): its bounds
            b = frame.geometry.bounds.to_numpy()
            corners = np.stack([b[:, [0, 1]], b[:, [2, 1]], b[:, [2, 3]], b[:, [0, 3]]], axis=1)
        patches["corners"] = corners.reshape(n, 8)
        lo, hi = corners.min(axis=1), corners.max(axis=1)
        patches["box"] = np.column_stack([_outward(lo[:, 0], -np.inf), _outward(lo[:, 1], -np.inf),
                                          _outward(hi[:, 0], np.inf), _outward(hi[:, 1], np.inf)])  # fmt: skip
        return cls.from_records(patches, scene_ids)

    @classmethod
    def merge(cls, parts: Sequence[tuple["SegmentLookup", np.ndarray]]) -> "SegmentLookup":
        """The lookup of the ``rows`` of each ``(lookup, rows)`` part, in order (compaction, removal): built from
        their records, never from the catalogs."""
        scene_ids: list[str] = []
        blocks = []
        for lookup, rows in parts:
            records = np.array(lookup.patches[rows], copy=True)
            scene_ids += [s for s in lookup.scene_ids if s not in scene_ids]
            remap = np.array([scene_ids.index(s) for s in lookup.scene_ids], dtype=np.int32)
            if len(records):
                records["scene"] = remap[records["scene"]]
            blocks.append(records)
        patches = np.concatenate(blocks) if blocks else np.zeros(0, PATCH)
        used = [scene_ids[c] for c in np.unique(patches["scene"])]
        if used != scene_ids:  # scenes whose every row was dropped: renumber the codes
            renumber = np.array([used.index(s) if s in used else -1 for s in scene_ids], dtype=np.int32)
            patches["scene"] = renumber[patches["scene"]]
            scene_ids = used
        return cls.from_records(patches, scene_ids)

    @classmethod
    def from_records(cls, patches: np.ndarray, scene_ids: list[str]) -> "SegmentLookup":
        """The lookup of ``PATCH`` records (box and corners filled) whose scene codes index ``scene_ids``."""
        n, codes = len(patches), patches["scene"]
        corners = patches["corners"].reshape(n, 4, 2)
        lo, hi = corners.min(axis=1), corners.max(axis=1)
        ranges: dict[str, list[tuple[int, int]]] = {s: [] for s in scene_ids}
        if n:
            starts = np.flatnonzero(np.diff(codes, prepend=-1))
            for start, stop in zip(starts, [*starts[1:], n]):
                ranges[scene_ids[codes[start]]].append((int(start), int(stop)))
        ordered = all(_row_major(patches, start, stop) for spans in ranges.values() if len(spans) == 1 for start, stop in spans)
        ordered = ordered and all(len(spans) == 1 for spans in ranges.values())
        width = np.median(hi - lo) if n else 1.0
        cell = float(min(max(CELLS_PER_PATCH * width, 1e-5), 10.0))
        centres = (lo + hi) / 2
        reach = float(((hi - lo) / 2).max()) if n else 0.0
        keys = _cell_keys(centres[:, 0], centres[:, 1], cell)
        order = np.argsort(keys, kind="stable")
        cells = np.stack([keys[order], order.astype(np.int64)])
        scene_bounds = {}
        for scene, spans in ranges.items():
            rows = np.concatenate([np.arange(a, b) for a, b in spans])
            scene_bounds[scene] = (float(lo[rows, 0].min()), float(lo[rows, 1].min()), float(hi[rows, 0].max()), float(hi[rows, 1].max()))
        bounds = (float(lo[:, 0].min()), float(lo[:, 1].min()), float(hi[:, 0].max()), float(hi[:, 1].max())) if n else (np.nan,) * 4
        return cls(patches, cells, scene_ids, ranges, cell, reach, bounds, scene_bounds, ordered)

    def save(self, folder: Path, names: dict) -> dict:
        """Write the two arrays to ``names["lookup"]`` and ``names["cells"]``; returns what the manifest keeps."""
        np.save(folder / names["lookup"], self.patches)
        np.save(folder / names["cells"], self.cells)
        return self.record()

    def record(self) -> dict:
        return {"scene_ids": self.scene_ids, "ranges": {s: [list(r) for r in spans] for s, spans in self.ranges.items()},
                "cell": self.cell, "reach": self.reach, "bounds": list(self.bounds),
                "scene_bounds": {s: list(b) for s, b in self.scene_bounds.items()}, "ordered": self.ordered}  # fmt: skip

    @classmethod
    def load(cls, folder: Path, names: dict, doc: dict) -> "SegmentLookup":
        """Open a segment's lookup files (``names``) described by its manifest ``doc``; nothing is read yet."""
        patches, cells = NpyRows(folder / names["lookup"]), NpyRows(folder / names["cells"])
        if patches.dtype != PATCH or cells.dtype != np.int64 or tuple(cells.shape) != (2, len(patches)):
            raise ValueError(f"unexpected lookup layout {patches.dtype} {cells.dtype} {cells.shape}")
        ranges = {s: [tuple(r) for r in spans] for s, spans in doc["ranges"].items()}
        scene_bounds = {s: tuple(b) for s, b in doc["scene_bounds"].items()}
        return cls(patches, cells, list(doc["scene_ids"]), ranges, float(doc["cell"]), float(doc["reach"]), tuple(doc["bounds"]),
                   scene_bounds, bool(doc["ordered"]))  # fmt: skip

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self.patches)

    def find(self, scene_id: str, row: int, col: int) -> int:
        """Local id of the patch (scene, row, col), -1 when absent."""
        for start, stop in self.ranges.get(scene_id, ()):
            if self.ordered:  # a binary search reading ~20 records, not the scene's column
                patches = self.patches
                at = bisect.bisect_left(range(start, stop), (row, col), key=lambda i: (int(patches[i]["row"]), int(patches[i]["col"])))
                if at < stop - start and (int(patches[start + at]["row"]), int(patches[start + at]["col"])) == (row, col):
                    return start + at
                continue
            part = self.patches[start:stop]
            found = np.flatnonzero((part["row"] == row) & (part["col"] == col))
            if len(found):
                return start + int(found[0])
        return -1

    def in_box(self, west: float, south: float, east: float, north: float) -> np.ndarray:
        """Sorted local ids of the patches whose box meets the lon/lat box."""
        b = self.bounds
        if not len(self) or west > b[2] or east < b[0] or south > b[3] or north < b[1]:
            return np.empty(0, np.int64)
        if west <= b[0] and south <= b[1] and east >= b[2] and north >= b[3]:  # the box holds the whole segment
            return np.arange(len(self), dtype=np.int64)
        # cells whose centre could belong to a patch reaching into the box
        w, s, e, n = max(west - self.reach, b[0] - self.cell), max(south - self.reach, b[1] - self.cell), \
            min(east + self.reach, b[2] + self.cell), min(north + self.reach, b[3] + self.cell)  # fmt: skip
        columns = _columns(self.cell)
        x0, x1 = (int(math.floor((v + 180.0) / self.cell)) for v in (w, e))
        y0, y1 = (int(math.floor((v + 90.0) / self.cell)) for v in (s, n))
        rows = np.arange(y0, y1 + 1, dtype=np.int64) * columns
        los, his = self._search_keys(rows + x0, "left"), self._search_keys(rows + x1, "right")
        found = [self._cell_ids(lo, hi) for lo, hi in zip(los, his) if hi > lo]
        if not found:
            return np.empty(0, np.int64)
        ids = np.concatenate(found).astype(np.int64)
        ids.sort()
        box = self.patches[ids]["box"]
        meets = (box[:, 0] <= east) & (box[:, 2] >= west) & (box[:, 1] <= north) & (box[:, 3] >= south)
        ids, box = ids[meets], box[meets]
        # a footprint whose box pokes out of the query box may still miss it (footprints are not axis-aligned in lon/lat)
        edge = np.flatnonzero((box[:, 0] < west) | (box[:, 2] > east) | (box[:, 1] < south) | (box[:, 3] > north))
        if len(edge):
            misses = ~shapely.intersects(self.footprints(ids[edge]), shapely.box(west, south, east, north))
            ids = np.delete(ids, edge[misses])
        return ids

    def footprints(self, ids: np.ndarray) -> np.ndarray:
        """Shapely polygons of local ``ids`` (EPSG:4326)."""
        corners = self.patches[ids]["corners"].astype(np.float64).reshape(-1, 4, 2)
        return shapely.polygons(np.concatenate([corners, corners[:, :1]], axis=1)) if len(corners) else np.empty(0, object)

    def centres(self, ids: np.ndarray) -> np.ndarray:
        """(n, 2) lon/lat centres of the footprints' boxes of local ``ids`` (as :func:`rscbir.catalog.patch_centres`)."""
        corners = self.patches[ids]["corners"].astype(np.float64).reshape(-1, 4, 2)
        return (corners.min(axis=1) + corners.max(axis=1)) / 2

    def _search_keys(self, values: np.ndarray, side: str) -> np.ndarray:
        """np.searchsorted of ``values`` in the sorted cell keys; on a file, ~20 reads of one key each."""
        if isinstance(self.cells, np.ndarray):
            return np.searchsorted(self.cells[0], values, side)
        if len(values) > BISECT_LIMIT:  # a box many cells tall: one read of every key beats ~20 reads per cell row
            return np.searchsorted(self.cells.elements(0, self.cells.shape[1]), values, side)
        keys = _Keys(self.cells)
        search = bisect.bisect_left if side == "left" else bisect.bisect_right
        return np.array([search(keys, int(v)) for v in values], dtype=np.int64)

    def _cell_ids(self, lo: int, hi: int) -> np.ndarray:
        if isinstance(self.cells, np.ndarray):
            return np.asarray(self.cells[1, lo:hi])
        n = self.cells.shape[1]
        return self.cells.elements(n + int(lo), n + int(hi))

    def covering(self, lon: float, lat: float) -> np.ndarray:
        """Local ids of the patches whose footprint covers (lon, lat)."""
        ids = self.in_box(lon, lat, lon, lat)
        if not len(ids):
            return ids
        return ids[shapely.covers(self.footprints(ids), shapely.Point(lon, lat))]

    def within(self, lon: float, lat: float, metres: float) -> np.ndarray:
        """Local ids of the patches whose centre lies within ``metres`` of (lon, lat) (geodesic)."""
        dlat = metres / 110_574.0 + 1e-9  # a box that holds the circle, then the geodesic distance
        dlon = metres / max(111_320.0 * math.cos(math.radians(min(abs(lat) + dlat, 89.9))), 1.0) + 1e-9
        ids = self.in_box(lon - dlon - self.reach, lat - dlat - self.reach, lon + dlon + self.reach, lat + dlat + self.reach)
        if not len(ids):
            return ids
        return ids[geodesic_metres(lon, lat, self.centres(ids)) <= metres]

    def scene_mask(self, scene_ids: Sequence[str]) -> np.ndarray:
        """Bool mask of the segment's ids in ``scene_ids``."""
        mask = np.zeros(len(self), bool)
        for scene in scene_ids:
            for start, stop in self.ranges.get(scene, ()):
                mask[start:stop] = True
        return mask


class _Keys:
    """The first row of a (2, n) cells file as a sequence for :mod:`bisect`."""

    def __init__(self, cells: NpyRows) -> None:
        self.cells = cells

    def __len__(self) -> int:
        return self.cells.shape[1]

    def __getitem__(self, i: int) -> int:
        return int(self.cells.elements(i, i + 1)[0])


def _row_major(patches: np.ndarray, start: int, stop: int) -> bool:
    key = patches["row"][start:stop].astype(np.int64) * (1 << 31) + patches["col"][start:stop]
    return bool(np.all(np.diff(key) > 0))


def _columns(cell: float) -> int:
    return int(math.ceil(360.0 / cell)) + 2


def _cell_keys(lon: np.ndarray, lat: np.ndarray, cell: float) -> np.ndarray:
    x = np.floor((lon + 180.0) / cell).astype(np.int64)
    y = np.floor((lat + 90.0) / cell).astype(np.int64)
    return y * _columns(cell) + x


__all__ = ["SegmentLookup", "PATCH"]

"""The index manifest (``index.json``): read and describe an index without loading its vectors, FAISS or model.

Kept apart from :mod:`rscbir.index` so that describing an index (``rscbir info INDEX_DIR``) needs only the
standard library: it answers in a fraction of a second whatever the index's size.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from rscbir.errors import IndexFileError

MANIFEST = "index.json"
FORMAT = "rscbir-index"


def is_index(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding an index manifest."""
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of the index at ``path``; :class:`IndexFileError` when there is none or it is unreadable."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise IndexFileError(f"{path}: no index here ({MANIFEST} missing); build one with `rscbir index SCENE -o {path}`") from None
    except (OSError, ValueError) as exc:
        raise IndexFileError(f"{path}: {MANIFEST} is unreadable ({exc}); rebuild the index with `rscbir index`") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFileError(f"{path}: {MANIFEST} is not an rscbir index manifest")
    return manifest


SEGMENT_KEYS = ("catalog", "vectors", "augmented", "faiss", "lookup", "cells")  # the files of one segment


def segment_records(manifest: dict) -> list[dict]:
    """The segments of an index, in id order: ``{"id", "count", "scenes", "index_type", "files"}`` each.

    A version-1 index (one generation of whole files) reads as a single segment of those files,
    so it opens, and its first append adds a segment beside them without rewriting them.
    """
    if "segments" in manifest:
        return manifest["segments"]
    files = manifest["files"]
    return [{"id": 0, "count": manifest["count"], "scenes": [s["scene_id"] for s in manifest["scenes"]],
             "index_type": manifest.get("index_type"), "files": {k: files[k] for k in SEGMENT_KEYS if files.get(k)}}]  # fmt: skip


def shared_files(manifest: dict) -> dict:
    """Files every segment shares: the PCA, the trained (empty) FAISS index of IVF/PQ types."""
    if "segments" in manifest:
        return dict(manifest.get("files", {}))
    return {k: v for k, v in manifest["files"].items() if k not in SEGMENT_KEYS}


def data_files(manifest: dict) -> list[str]:
    """Every data file the manifest names (shared files, then each segment's)."""
    return [*shared_files(manifest).values(), *(name for s in segment_records(manifest) for name in s["files"].values())]


def file_checksum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """``blake2b:<hex>`` of a file, streamed in 1 MiB reads (about 1 GB/s: a second per million 128-d vectors)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return "blake2b:" + digest.hexdigest()


def file_records(path: str | os.PathLike, names) -> dict:
    """``{name: {"bytes": size, "checksum": ...}}`` for the data files of a generation, for the manifest."""
    path = Path(path)
    return {name: {"bytes": (path / name).stat().st_size, "checksum": file_checksum(path / name)} for name in names}


def check_sizes(path: str | os.PathLike, manifest: dict) -> None:
    """The cheap check made at every open: each data file exists with the size the manifest recorded."""
    path = Path(path)
    for name, record in manifest.get("checksums", {}).items():
        try:
            size = (path / name).stat().st_size
        except FileNotFoundError:
            raise IndexFileError(f"{path / name}: missing; the index is damaged (rebuild it with `rscbir index`)") from None
        if size != record["bytes"]:
            raise IndexFileError(f"{path / name}: {size} bytes, the manifest recorded {record['bytes']}; the file is damaged "
                                 "(truncated or overwritten): rebuild the index with `rscbir index`")  # fmt: skip


def verify_index(path: str | os.PathLike) -> dict:
    """Re-hash every data file of the index against its manifest (``rscbir check``, like ``git fsck``).

    Returns ``{"files": n, "bytes": total, "damaged": [{"file", "problem"}], "unchecked": [names]}``;
    an index written before checksums were recorded has every file ``unchecked``.
    """
    path = Path(path)
    manifest = read_manifest(path)
    records = manifest.get("checksums", {})
    damaged, total = [], 0
    for name, record in records.items():
        file = path / name
        if not file.is_file():
            damaged.append({"file": str(file), "problem": "missing"})
            continue
        size = file.stat().st_size
        total += size
        if size != record["bytes"]:
            damaged.append({"file": str(file), "problem": f"{size} bytes, recorded {record['bytes']}"})
        elif file_checksum(file) != record["checksum"]:
            damaged.append({"file": str(file), "problem": "content differs from its checksum (bytes overwritten)"})
    unchecked = sorted(set(data_files(manifest)) - set(records))
    return {"path": str(path), "files": len(records), "bytes": total, "damaged": damaged, "unchecked": unchecked}


def describe_index(path: str | os.PathLike) -> dict:
    """What an index holds: scenes, dates, patches, model, vectors, tiling, search structure, grid, size on disk."""
    path = Path(path)
    manifest = read_manifest(path)
    model = manifest["model"]
    scenes = [{"scene_id": s["scene_id"], "date": s.get("date"), "date_source": s.get("date_source", "not recorded"),
               "patches": s.get("patches")} for s in manifest["scenes"]]  # fmt: skip
    files = data_files(manifest)
    size = sum((path / name).stat().st_size for name in files if (path / name).is_file()) + (path / MANIFEST).stat().st_size
    segments = segment_records(manifest)
    grid = manifest.get("grid")
    return {
        "path": str(path),
        "patches": manifest["count"],
        "scenes": scenes,
        "dates": sorted({s["date"] for s in scenes if s["date"]}),
        "model": {k: model.get(k) for k in ("backbone", "weights", "checkpoint", "pooling", "stages", "views", "input_bands", "input_size")},
        "vectors": {"dim": manifest["dim"], "dtype": manifest["dtype"], "pca_dim": manifest.get("pca_dim"),
                    "whiten": manifest.get("whiten"), "augment": manifest.get("augment", 0),
                    "centre_scenes": manifest.get("centre_scenes", False)},  # fmt: skip
        "tiling": manifest["tiling"],
        "index_type": manifest["index_type"],
        "aligned_grid": {"crs": grid["crs"], "width": grid["width"], "height": grid["height"]} if grid else None,
        "generation": manifest["generation"],
        "segments": [{"id": s["id"], "patches": s["count"], "index_type": s.get("index_type"), "scenes": s.get("scenes", [])} for s in segments],
        "files": files,
        "bytes_on_disk": size,
    }


def describe_text(doc: dict) -> str:
    """A few lines for people from :func:`describe_index`."""
    model, vectors, grid = doc["model"], doc["vectors"], doc["aligned_grid"]
    lines = [
        f"{doc['path']}: {doc['patches']} patches from {len(doc['scenes'])} scene(s), dates {', '.join(doc['dates']) or 'none'}",
        f"  model      {model['backbone']} ({model.get('stages') or 1} stages, {model['pooling']} pooling, "
        f"{model.get('views') or 1} view(s), bands {','.join(model['input_bands'])}, input {model['input_size']} px)"
        + (f", checkpoint {model['checkpoint']}" if model.get("checkpoint") else ""),
        f"  vectors    {vectors['dim']}-d {vectors['dtype']}, PCA {vectors['pca_dim'] or 'none'}, augment {vectors['augment']}"
        + (", scenes centred" if vectors["centre_scenes"] else ""),
        f"  tiling     patch {doc['tiling']['patch_size']}, stride {doc['tiling'].get('stride') or 'patch size'}, edge {doc['tiling']['edge']}",
        f"  search     FAISS {doc['index_type']}, {len(doc['segments'])} segment(s), generation {doc['generation']}, "
        f"{doc['bytes_on_disk'] / 2**20:.1f} MiB on disk",
        "  grid       " + (f"aligned, {grid['width']} x {grid['height']} px, {_crs_name(grid['crs'])}" if grid else "each scene its own"),
    ]
    lines += [f"  scene      {s['scene_id']} ({s['date'] or 'undated'}, date from {s['date_source']}): {s['patches']} patches" for s in doc["scenes"]]
    return "\n".join(lines)


def _crs_name(wkt: str) -> str:
    """``EPSG:n`` from a WKT's last authority, else the WKT's name (no pyproj needed)."""
    codes = re.findall(r'(?:AUTHORITY|ID)\["EPSG",\s*"?(\d+)"?\]', wkt)
    if codes:
        return f"EPSG:{codes[-1]}"
    name = re.match(r'\w+\["([^"]+)"', wkt)
    return name.group(1) if name else wkt[:40]

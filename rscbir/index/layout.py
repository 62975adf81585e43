"""The index folder on disk: file names, the manifest file, checksums and the integrity check.

Layout of ``INDEX_DIR``::

    index.json                          manifest (rscbir.index.manifest): model, tiling, scenes, segments, checksums
    segment-000003-catalog.parquet      the segment's patch rows (GeoParquet, row groups of ``CHUNK``)
    segment-000003-vectors.npy          (n, dim) embeddings: appends, exact re-ranking, query by patch
    segment-000003-augmented.npy        database-side augmented vectors (what FAISS searches, --augment)
    segment-000003-faiss.index          the segment's FAISS index (inner product on L2-normalised vectors)
    segment-000003-lookup.npy, -cells.npy   what a query needs of the catalog (rscbir.index.lookup)
    pca-000001.npz, trained-000001.faiss   shared: the PCA, the trained empty index of IVF/PQ types
    places-000001.npz                      shared: the within-place whitening of an aligned index of 2+ dates
    .staging/                           per-scene embedding stores of a run in progress (resume)

Standard library only: ``rscbir info`` and ``rscbir check`` answer without numpy, FAISS or a model.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from rscbir.errors import IndexFileError
from rscbir.index.manifest import FORMAT, Manifest

MANIFEST = "index.json"
STAGING = ".staging"
# Rows handled at once everywhere the index streams: GeoParquet row groups, FAISS adds, vector copies. A reader
# fetches a patch's row group by id, so the size is part of the format.
CHUNK = 65536
DATA_FILE = re.compile(r"^(segment-\d+-(catalog\.parquet|vectors\.npy|augmented\.npy|faiss\.index|lookup\.npy|cells\.npy)|trained-\d+\.faiss|pca-\d+\.npz|places-\d+\.npz"
                       r"|(catalog|vectors|augmented|faiss)-\d+\.(parquet|npy|index))$")  # fmt: skip


def is_index(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding an index manifest."""
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path: str | os.PathLike) -> Manifest:
    """The manifest of the index at ``path``, parsed; :class:`IndexFileError` when there is none or it is unreadable."""
    path = Path(path)
    try:
        doc = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise IndexFileError(f"{path}: no index here ({MANIFEST} missing); build one with `rscbir index build SCENE -o {path}`") from None
    except (OSError, ValueError) as exc:
        raise IndexFileError(f"{path}: {MANIFEST} is unreadable ({exc}); rebuild the index with `rscbir index build`") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise IndexFileError(f"{path}: {MANIFEST} is not an rscbir index manifest")
    try:
        return Manifest.from_dict(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexFileError(f"{path}: {MANIFEST} is incomplete ({type(exc).__name__}: {exc}); rebuild the index") from None


def segment_names(segment_id: int, augmented: bool) -> dict:
    """The file names of segment ``segment_id``."""
    stem = f"segment-{segment_id:06d}"
    names = {"catalog": f"{stem}-catalog.parquet", "vectors": f"{stem}-vectors.npy", "faiss": f"{stem}-faiss.index",
             "lookup": f"{stem}-lookup.npy", "cells": f"{stem}-cells.npy"}  # fmt: skip
    if augmented:
        names["augmented"] = f"{stem}-augmented.npy"
    return names


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


def check_sizes(path: str | os.PathLike, manifest: Manifest) -> None:
    """The cheap check made at every open: each data file exists with the size the manifest recorded."""
    path = Path(path)
    for name, record in manifest.checksums.items():
        try:
            size = (path / name).stat().st_size
        except FileNotFoundError:
            raise IndexFileError(f"{path / name}: missing; the index is damaged (rebuild it with `rscbir index build`)") from None
        if size != record["bytes"]:
            raise IndexFileError(f"{path / name}: {size} bytes, the manifest recorded {record['bytes']}; the file is damaged "
                                 "(truncated or overwritten): rebuild the index with `rscbir index build`")  # fmt: skip


def verify_index(path: str | os.PathLike) -> dict:
    """Re-hash every data file of the index against its manifest (``rscbir check``, like ``git fsck``).

    Returns ``{"files": n, "bytes": total, "damaged": [{"file", "problem"}], "unchecked": [names]}``;
    an index written before checksums were recorded has every file ``unchecked``.
    """
    path = Path(path)
    manifest = read_manifest(path)
    records = manifest.checksums
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
    unchecked = sorted(set(manifest.data_files()) - set(records))
    return {"path": str(path), "files": len(records), "bytes": total, "damaged": damaged, "unchecked": unchecked}

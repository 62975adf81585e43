"""What an index holds, for people and for ``--json``: read from the manifest alone (``rscbir info``, standard library only)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from rscbir.index.layout import MANIFEST, read_manifest


def describe_index(path: str | os.PathLike) -> dict:
    """What an index holds: scenes, dates, patches, model, vectors, tiling, search structure, grid, size on disk."""
    path = Path(path)
    manifest = read_manifest(path)
    model = manifest.model
    scenes = [{"scene_id": s.scene_id, "date": s.date, "date_source": s.date_source, "patches": s.patches} for s in manifest.scenes]
    files = manifest.data_files()
    size = sum((path / name).stat().st_size for name in files if (path / name).is_file()) + (path / MANIFEST).stat().st_size
    grid = manifest.grid
    return {
        "path": str(path),
        "patches": manifest.count,
        "scenes": scenes,
        "dates": sorted({s["date"] for s in scenes if s["date"]}),
        "model": {k: model.get(k) for k in ("backbone", "weights", "checkpoint", "pooling", "stages", "views", "input_bands", "input_size")},
        "vectors": {"dim": manifest.dim, "dtype": manifest.dtype, "pca_dim": manifest.pca_dim, "whiten": manifest.whiten,
                    "augment": manifest.augment, "centre_scenes": manifest.centre_scenes,
                    "place_whitening": "places" in manifest.files},  # fmt: skip
        "tiling": manifest.tiling,
        "index_type": manifest.index_type,
        "aligned_grid": {"crs": grid["crs"], "width": grid["width"], "height": grid["height"]} if grid else None,
        "generation": manifest.generation,
        "segments": [{"id": s.id, "patches": s.count, "index_type": s.index_type, "scenes": list(s.scenes)} for s in manifest.segments],
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
        + (", dates centred" if vectors["centre_scenes"] else "")
        + (", within-place whitening across dates" if vectors.get("place_whitening") else ""),
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

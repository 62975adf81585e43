"""Summary printed by ``make demo`` (a script, not part of the library): what was written under ``out/`` and whether
the two dates of each catalog line up patch for patch."""

from __future__ import annotations

import sys
from pathlib import Path

from rscbir.catalog import read_catalog


def alignment_report(path: Path) -> str:
    """One line: patches per date and the largest offset between same (row, col) patches."""
    catalog = read_catalog(path)
    scenes = list(dict.fromkeys(catalog["scene_id"]))
    first, *others = (catalog[catalog["scene_id"] == s].set_index(["row", "col"]) for s in scenes)
    parts = [f"{path.name}: " + ", ".join(f"{s} ({d}) {int((catalog['scene_id'] == s).sum())} patches"
                                          for s, d in zip(scenes, catalog.groupby('scene_id', sort=False)['date'].first()))]
    for scene, other in zip(scenes[1:], others):
        common = first.index.intersection(other.index)
        cols = ["minx", "miny", "maxx", "maxy"]
        offset = (first.loc[common, cols] - other.loc[common, cols]).abs().to_numpy().max() if len(common) else float("nan")
        parts.append(f"  {len(common)} (row, col) shared with {scenes[0]}; largest bounds offset {offset:.3g} CRS units")
    return "\n".join(parts)


def index_report(path: Path) -> str:
    """Vectors indexed, and how similar the same place is across two dates vs different places."""
    import numpy as np

    from rscbir.index import Index

    index = Index.open(path)
    config = index.model_config
    lines = [f"{path.name}: {len(index)} patches x {index.manifest.dim}-d ({config.backbone}, bands "
             f"{','.join(config.input_bands)}), FAISS {index.manifest.index_type}"]  # fmt: skip
    scenes = list(dict.fromkeys(index.catalog["scene_id"]))
    if len(scenes) == 2:
        _, _, va, vb = index.co_located(*scenes)
        same, other = np.sum(va * vb, axis=1), np.sum(va * np.roll(vb, 1, axis=0), axis=1)
        lines.append(f"  cosine between dates: same place median {np.median(same):.3f}, different places median {np.median(other):.3f}")
    return "\n".join(lines)


def geojson_report(path: Path) -> str:
    import json

    doc = json.loads(path.read_text())
    extra = doc.get("change") or doc.get("query") or {}
    summary = ", ".join(f"{k}={v}" for k, v in extra.items() if k in ("method", "level", "threshold", "changed_patches", "patches", "changed_pixels", "pixels", "patch_id", "taught_by"))
    if extra.get("feedback"):
        summary += f", feedback: {len(extra['feedback']['positives'])} right, {len(extra['feedback']['negatives'])} wrong"
    marks = sum(f["properties"].get("label") is not None for f in doc["features"])
    counted = f"{len(doc['features']) - marks} results + {marks} marks" if marks else f"{len(doc['features'])} features"
    return f"{path.name}: {counted} ({summary})"


def main(out: str) -> None:
    out = Path(out)
    for path in sorted(out.glob("*_tiles.*")):
        print(alignment_report(path))
    for path in sorted(p for p in out.glob("*_index") if (p / "index.json").exists()):
        print(index_report(path))
    for path in sorted(out.glob("*_query*.geojson")) + sorted(out.glob("*_change.geojson")) + sorted(out.glob("*_taught.geojson")):
        print(geojson_report(path))
    written = sorted(p.name for p in out.iterdir() if p.suffix in (".png", ".html", ".tif"))
    print("pictures and rasters:", ", ".join(written))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "out")

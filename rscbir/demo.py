"""Summary printed by ``make demo``: what was written under ``out/`` and whether
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


def main(out: str) -> None:
    for path in sorted(Path(out).glob("*_tiles.*")):
        print(alignment_report(path))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "out")

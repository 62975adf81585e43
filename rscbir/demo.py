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


def embedding_report(path: Path) -> str:
    """Vectors stored, and how similar the same place is across dates vs different places."""
    import numpy as np

    from rscbir.embed import EmbeddingStore

    store = EmbeddingStore.open(path)
    config = store.model_config
    lines = [f"{path.name}: {len(store.vectors)} vectors x {store.vectors.shape[1]} ({config.backbone}, bands {','.join(config.input_bands)})"]
    scenes = list(dict.fromkeys(store.catalog["scene_id"]))
    if len(scenes) == 2:
        a, b = (store.catalog[store.catalog["scene_id"] == s].set_index(["row", "col"])["vector"] for s in scenes)
        common = a.index.intersection(b.index)
        va = np.asarray(store.vectors[a.loc[common].to_numpy()], dtype=np.float32)
        vb = np.asarray(store.vectors[b.loc[common].to_numpy()], dtype=np.float32)
        same = np.sum(va * vb, axis=1)
        other = np.sum(va * np.roll(vb, 1, axis=0), axis=1)
        lines.append(f"  cosine {scenes[0]} vs {scenes[1]}: same place median {np.median(same):.3f}, "
                     f"different places median {np.median(other):.3f}")  # fmt: skip
    return "\n".join(lines)


def main(out: str) -> None:
    for path in sorted(Path(out).glob("*_tiles.*")):
        print(alignment_report(path))
    for path in sorted(p for p in Path(out).glob("*_embeddings") if (p / "model.json").exists()):
        print(embedding_report(path))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "out")

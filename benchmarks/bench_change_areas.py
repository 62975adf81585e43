"""Which score ranks changed areas: precision of the top-ranked areas on the 10 OSCD cities.

Each city is scored as `rscbir change CITY/imgs_1 CITY/imgs_2 --preset sentinel2 --patch-size 32`
does (fusion, pixel level, edges included), its areas traced with the default cut, and the areas
ranked by each candidate score. Precision of the top 8 = the share of the top-8 areas' pixels that the
label calls change (pixel-weighted), and the share of those areas that are mostly change. Design cities
(abudhabi, aguasclaras, bercy, bordeaux, hongkong) choose; the other five confirm. Also reports the
pooled pixel F1 of the default map, and how many top-8 areas are a single pixel's extreme (the area's
max more than 3x its p75).

    python benchmarks/bench_change_areas.py
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("RSCBIR_DATA", HERE.parents[1] / "shared" / "data"))
DESIGN = ["abudhabi", "aguasclaras", "bercy", "bordeaux", "hongkong"]
CONFIRM = ["mumbai", "nantes", "paris", "pisa", "rennes"]
TOP = 8
CANDIDATES = {
    "max": lambda v: float(v.max()),
    "mean": lambda v: float(v.mean()),
    "median": lambda v: float(np.median(v)),
    "p75": lambda v: float(np.percentile(v, 75)),
    "p90": lambda v: float(np.percentile(v, 90)),
}


def city_areas(city: str) -> tuple[list[dict], dict]:
    from rscbir import change as ch
    from rscbir.datasets.oscd import oscd_labels_on
    from rscbir.models.options import ModelOptions
    from rscbir.presets import SceneOptions
    from rscbir.tiling import TilingConfig

    folder = DATA / "oscd" / city
    (before, after), preset = SceneOptions("sentinel2").open([str(folder / "imgs_1"), str(folder / "imgs_2")])
    scores = ch.score_scenes(before, after, TilingConfig(32), "fusion", ModelOptions(), preset, True, pixel_maps=True)
    mask, smoothed, _ = ch.pixel_change_mask(scores, "fusion", ch.PIXEL_THRESHOLD, ch.PixelRegularisation())
    truth = oscd_labels_on(folder, scores.grid)
    h, w = min(truth.shape[0], mask.shape[0]), min(truth.shape[1], mask.shape[1])
    mask, smoothed, truth = mask[:h, :w], smoothed[:h, :w], truth[:h, :w]
    labels, count = ndimage.label(mask)
    areas = []
    for k, where in enumerate(ndimage.find_objects(labels), start=1):
        inside = labels[where] == k
        values = smoothed[where][inside]
        areas.append({"pixels": int(inside.sum()), "changed": int(truth[where][inside].sum()),
                      **{name: f(values) for name, f in CANDIDATES.items()}})  # fmt: skip
    tp, fp, fn = int((mask & truth).sum()), int((mask & ~truth).sum()), int((~mask & truth).sum())
    return areas, {"tp": tp, "fp": fp, "fn": fn, "nan_pixels": int(np.isnan(scores.pixels["fusion"]).sum())}


def top_precision(areas: list[dict], key: str) -> tuple[float, float, int]:
    top = sorted(areas, key=lambda a: -a[key])[:TOP]
    pixels = sum(a["pixels"] for a in top)
    weighted = sum(a["changed"] for a in top) / max(pixels, 1)
    mostly = float(np.mean([a["changed"] / a["pixels"] > 0.5 for a in top])) if top else 0.0
    spikes = sum(a["max"] > 3 * a["p75"] for a in top)
    return weighted, mostly, spikes


def main() -> None:
    if not (DATA / "oscd").is_dir():
        sys.exit(f"{DATA}/oscd not found; set RSCBIR_DATA")
    from rscbir.models.load import configure_threads

    configure_threads()
    start = time.perf_counter()
    cities = {}
    for city in DESIGN + CONFIRM:
        areas, counts = city_areas(city)
        cities[city] = {"areas": areas, **counts}
        print(city, len(areas), "areas", counts, flush=True)
    result = {"date": dt.date.today().isoformat(), "seconds": round(time.perf_counter() - start), "top": TOP, "splits": {}}
    for split, names in (("design", DESIGN), ("confirmation", CONFIRM)):
        row = {}
        for key in CANDIDATES:
            figures = [top_precision(cities[c]["areas"], key) for c in names]
            row[key] = {"pixel_precision": float(np.mean([f[0] for f in figures])),
                        "mostly_change": float(np.mean([f[1] for f in figures])),
                        "spike_areas": int(sum(f[2] for f in figures))}  # fmt: skip
        tp, fp, fn = (sum(cities[c][k] for c in names) for k in ("tp", "fp", "fn"))
        row["pixel_f1"] = 2 * tp / max(2 * tp + fp + fn, 1)
        row["nan_pixels"] = sum(cities[c]["nan_pixels"] for c in names)
        result["splits"][split] = row
    out = HERE / "results" / "change_areas.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    for split, row in result["splits"].items():
        print(f"{split}: pixel F1 {row['pixel_f1']:.3f}, NaN pixels {row['nan_pixels']}")
        for key in CANDIDATES:
            r = row[key]
            print(f"  {key:6s} top-{TOP} pixel precision {r['pixel_precision']:.3f}, mostly change {r['mostly_change']:.3f}, spikes {r['spike_areas']}")


if __name__ == "__main__":
    main()

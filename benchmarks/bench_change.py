"""Change detection on the 10 labelled OSCD cities: every method next to the CVA baseline.

Runs `rscbir.evaluate.evaluate_change_oscd` (what `rscbir eval change` runs) with the CNN
reading RGB (B04 B03 B02) and, in a second run, all 13 bands through the inflated first
convolution. 32 px patches at 10 m; each city thresholded on its own scores by Otsu (no
labels); a patch is changed above 0 %, 5 % and 25 % changed pixels. Appends pooled and
per-city tables to results.md, cities where a method loses included.

    python benchmarks/bench_change.py [--skip-all-bands]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import record  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("RSCBIR_DATA", HERE.parents[1] / "shared" / "data"))
WORK = HERE / "_work"


def tables(result: dict, label: str, seconds: float) -> list[str]:
    from rscbir.evaluate import figure_key

    methods, cuts = result["methods"], result["cuts"]
    lines = [
        f"\n### {label} ({seconds:.0f} s)\n",
        "Pooled over the 10 cities:\n",
        "| method | cut | precision | recall | F1 | ROC AUC |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for cut in cuts:
        for method in methods:
            m = result["pooled"][figure_key(method, cut)]
            lines.append(f"| {method} | > {cut:g} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['auc']:.3f} |")
    lines += ["", "Per city, patch changed at > 5 % changed pixels (AUC / F1):\n",
              "| city | changed patches | " + " | ".join(methods) + " | best AUC |",
              "|---|---:|" + "---:|" * len(methods) + "---|"]  # fmt: skip
    for city, r in result["cities"].items():
        cells = [f"{r[figure_key(m, 0.05)]['auc']:.3f} / {r[figure_key(m, 0.05)]['f1']:.3f}" for m in methods]
        best = max(methods, key=lambda m: r[figure_key(m, 0.05)]["auc"])
        lines.append(f"| {city} | {r[figure_key(methods[0], 0.05)]['changed_patches']} of {r['patches']} | " + " | ".join(cells) + f" | {best} |")
    wins = {m: sum(r[figure_key(m, 0.05)]["auc"] > r[figure_key("cva", 0.05)]["auc"] for r in result["cities"].values()) for m in methods if m != "cva"}
    lines.append("\nCities where the method's AUC beats CVA (5 % cut): " + ", ".join(f"{m} {n}/10" for m, n in wins.items()) + ".")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-all-bands", action="store_true")
    args = parser.parse_args()
    if not (DATA / "oscd").is_dir():
        sys.exit(f"{DATA}/oscd not found; set RSCBIR_DATA")
    from rscbir.evaluate import evaluate_change_oscd
    from rscbir.models.load import configure_threads

    configure_threads()
    WORK.mkdir(exist_ok=True)
    lines = [
        f"\n## Change detection on OSCD ({dt.date.today().isoformat()})\n",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores. Command: `python benchmarks/bench_change.py` "
        "(the same evaluation as `rscbir eval change ../shared/data/oscd [--all-bands]`). 32 px patches at 10 m on the "
        "date-1 grid; labels 2 = change; Otsu threshold per city on that city's scores; CNN = ImageNet "
        "EfficientNet-Lite0, 2-98 % stretch per scene, 224 px input. `cva` = change vector analysis on all 13 bands, "
        "each standardised per scene; `fusion` = mean robust z-score of `multilayer` and `cva`.",
    ]
    for all_bands in (False, True):
        if all_bands and args.skip_all_bands:
            continue
        start = time.perf_counter()
        result = evaluate_change_oscd(DATA / "oscd", all_bands=all_bands, progress=lambda s: print(s, flush=True))
        seconds = time.perf_counter() - start
        (WORK / f"oscd_change_{'all' if all_bands else 'rgb'}.json").write_text(json.dumps(result, indent=1))
        label = "CNN on all 13 bands (inflated first convolution)" if all_bands else "CNN on RGB (B04 B03 B02)"
        lines += tables(result, label, seconds)
        print("\n".join(lines[-30:]), flush=True)
    record("\n".join(lines), "change_oscd")


if __name__ == "__main__":
    main()

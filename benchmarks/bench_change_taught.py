"""Change taught by marks and by labelled pairs (issue 20), measured the way users teach it.

* Marks: `rscbir eval change DIR --marks 1,3,10 --rounds 2` - N clicks per pair simulated from its label (half in
  separate changed areas, half on unchanged ground; 3 seeds), then N more where the map is most wrong. OSCD design
  cities and confirmation cities apart; LEVIR-CD and DSIFN samples.
* Labelled pairs: `rscbir finetune-change` on the OSCD design cities (timed from a cold cache, CNN included), measured
  on the confirmation cities (and on the design cities it saw, for reference); on the first 6 LEVIR-CD / DSIFN
  samples, measured on the others. Marks on top of each change model.
* Speed on OSCD Rennes, side by side in one run: label-free `rscbir change`, the first map with marks (cold cache) and
  a new round of marks (cached).

Everything runs with RSCBIR_CACHE=benchmarks/_work/cache_taught (removed first: cold timings are cold).

    python benchmarks/bench_change_taught.py
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from record import record  # noqa: E402

DATA = Path(os.environ.get("RSCBIR_DATA", HERE.parents[1] / "shared" / "data"))
WORK = HERE / "_work" / "taught"
CACHE = HERE / "_work" / "cache_taught"
DESIGN = ["abudhabi", "aguasclaras", "bercy", "bordeaux", "hongkong"]
CONFIRM = ["mumbai", "nantes", "paris", "pisa", "rennes"]
CLICKS = (1, 3, 10)
RSCBIR = str(Path(sys.executable).with_name("rscbir"))


def timed(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([RSCBIR, "-q", *args], check=True, capture_output=True, text=True, env=os.environ)
    return time.perf_counter() - start


def measure(root, names, head=None, patch=32):
    from rscbir.datasets.change_sets import change_set_defaults
    from rscbir.evaluate import evaluate_taught_change
    from rscbir.tiling import TilingConfig

    options, _ = change_set_defaults(root)
    return evaluate_taught_change(root, names, options, TilingConfig(patch), head, CLICKS, rounds=2, seeds=3)["pooled"]


def row(label, pooled, head_key=True):
    f = lambda key: f"{pooled[key]['f1']:.3f}" if key in pooled else ""  # noqa: E731
    start = f("change model") if head_key and "change model" in pooled else f("label-free fusion")
    cells = [start] + [f(f"{n} clicks, round {r}") for n in CLICKS for r in (1, 2)]
    return f"| {label} | {f('label-free cva')} | " + " | ".join(cells) + " |"


def main() -> None:
    shutil.rmtree(CACHE, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    os.environ["RSCBIR_CACHE"] = str(CACHE)
    from rscbir.change.head import read_change_head

    rennes = DATA / "oscd" / "rennes"
    common = ["change", str(rennes / "imgs_1"), str(rennes / "imgs_2"), "--preset", "sentinel2", "--patch-size", "32"]
    marks = WORK / "rennes_marks.geojson"
    marks.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [-1.68366, 48.12493]}, "properties": {"changed": 0}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [-1.6650, 48.1100]}, "properties": {"changed": 1}}]}))
    speed = {"label-free change": timed(*common, "-o", str(WORK / "plain.geojson")),
             "first map with marks (cold cache)": timed(*common, "--marks", str(marks), "-o", str(WORK / "m1.geojson")),
             "new round of marks (cached)": timed(*common, "--marks", str(marks), "-o", str(WORK / "m2.geojson"))}

    figures, times = {"speed_s": speed}, {}
    oscd = DATA / "oscd"
    model = WORK / "oscd_design.pt"
    times["finetune-change, 5 OSCD design cities, cold cache"] = timed("finetune-change", str(oscd), "--pairs", ",".join(DESIGN), "-o", str(model))
    head = read_change_head(model)
    figures["oscd"] = {"marks design": measure(oscd, DESIGN), "marks confirmation": measure(oscd, CONFIRM),
                       "model design": measure(oscd, DESIGN, head), "model confirmation": measure(oscd, CONFIRM, head)}  # fmt: skip
    for name in ("levir_cd_samples", "dsifn_cd_samples"):
        root = DATA / name
        from rscbir.datasets.change_sets import change_set_names

        pairs = change_set_names(root)
        train, test = pairs[:6], pairs[6:]
        path = WORK / f"{name}.pt"
        times[f"finetune-change, {len(train)} {name} pairs"] = timed("finetune-change", str(root), "--pairs", ",".join(train), "-o", str(path))
        vhr_head = read_change_head(path)
        figures[name] = {"marks all": measure(root, pairs, patch=64), "marks test": measure(root, test, patch=64),
                         "model test": measure(root, test, vhr_head, patch=64)}  # fmt: skip
    figures["train_s"] = times

    o, lv, ds = figures["oscd"], figures["levir_cd_samples"], figures["dsifn_cd_samples"]
    head_cells = "| start | CVA | start F1 | 1 | 1 + 1 | 3 | 3 + 3 | 10 | 10 + 10 |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    text = f"""## Change taught by marks and labelled pairs ({dt.date.today():%Y-%m-%d})

Command: `python benchmarks/bench_change_taught.py` ({platform.machine()}, {os.cpu_count()} cores). Pooled pixel F1. Clicks are
simulated from each pair's label (`rscbir eval change DIR --marks 1,3,10 --rounds 2`: half in separate changed areas,
half on unchanged ground, one pixel each, 3 seeds pooled; "N + N": N more clicks where the map is most wrong). A mark
answers for its place: "not changed" clears the flagged area it lies on, "changed" flags the connected ground around
it that leans toward change (mark rule chosen on the OSCD design cities). The change model (`rscbir finetune-change`)
is a 2-layer head on the frozen ImageNet EfficientNet-Lite0's per-pixel evidence, trained on the design cities (OSCD)
or the first 6 pairs (LEVIR-CD, DSIFN); it never saw the confirmation cities or the test pairs.

OSCD (Sentinel-2, 10 m; CNN on RGB, band residuals on all 13 bands; 32 px patches):

{head_cells}
{row("design cities, label-free + marks", o["marks design"], False)}
{row("confirmation cities, label-free + marks", o["marks confirmation"], False)}
{row("design cities, change model (trained on them) + marks", o["model design"])}
{row("**confirmation cities, change model + marks**", o["model confirmation"])}

Very-high-resolution samples (RGB PNG pairs, 256 px, 64 px patches):

{head_cells}
{row("LEVIR-CD, all 11, label-free + marks", lv["marks all"], False)}
{row("LEVIR-CD, test 5, label-free + marks", lv["marks test"], False)}
{row("LEVIR-CD, test 5, change model (first 6) + marks", lv["model test"])}
{row("DSIFN, all 10, label-free + marks", ds["marks all"], False)}
{row("DSIFN, test 4, label-free + marks", ds["marks test"], False)}
{row("DSIFN, test 4, change model (first 6) + marks", ds["model test"])}

Speed on OSCD Rennes (190,857 px), whole processes side by side: label-free `rscbir change` {speed["label-free change"]:.1f} s;
the first map with marks (cold cache: CNN evidence made and cached) {speed["first map with marks (cold cache)"]:.1f} s
({speed["first map with marks (cold cache)"] / speed["label-free change"]:.2f}x); a new round of marks (cached)
{speed["new round of marks (cached)"]:.1f} s. Training: """ + "; ".join(f"{k} {v:.0f} s" for k, v in times.items()) + "."
    record(text, "change_taught", figures)


if __name__ == "__main__":
    main()

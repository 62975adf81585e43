"""Designs explored for change taught by marks and labelled pairs, and for label-free cuts by regime (issue 20, 21).

Nothing here ships: these are the comparisons behind the choices in rscbir.change.marks (the mark rule) and
rscbir.change.head (the change model), and the regime question of issue 21. Each part prints one line per candidate;
results.md quotes them ("Change taught: designs explored"). Evidence is read from the cache bench_change_taught.py
fills (RSCBIR_CACHE=benchmarks/_work/cache_taught).

    python benchmarks/explore_change_taught.py rules     # mark rules on the OSCD design cities
    python benchmarks/explore_change_taught.py recut     # marks that also move the global cut (OSCD, LEVIR, DSIFN design halves)
    python benchmarks/explore_change_taught.py heads     # change-model variants: design-trained, confirmation-measured
    python benchmarks/explore_change_taught.py cuts      # label-free cuts per regime, every half
    python benchmarks/explore_change_taught.py loco      # change model blended with the label-free score, leave-one-city-out
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
os.environ.setdefault("RSCBIR_CACHE", str(HERE / "_work" / "cache_taught"))
DATA = Path(os.environ.get("RSCBIR_DATA", HERE.parents[1] / "shared" / "data"))
DESIGN = ["abudhabi", "aguasclaras", "bercy", "bordeaux", "hongkong"]
CONFIRM = ["mumbai", "nantes", "paris", "pisa", "rennes"]


def rules() -> None:
    from rscbir.change.marks import MarkRule
    from rscbir.evaluate import evaluate_taught_change
    from rscbir.presets import SceneOptions

    candidates = {"no regions, bandwidth 1 (before)": MarkRule(regions=False, lean=1.5, least=2),
                  "regions, lean 1.5": MarkRule(lean=1.5, least=2), "regions, lean 1.5, bandwidth 8": MarkRule(lean=1.5, least=2, bandwidth=8),
                  "regions, lean 1": MarkRule(lean=1.0, least=2), "regions, lean 2": MarkRule(lean=2.0, least=2),
                  "regions, lean 2.5": MarkRule(lean=2.5, least=2), "regions, lean 3": MarkRule(lean=3.0, least=2),
                  "regions, lean 1.5, grow 12": MarkRule(lean=1.5, least=2, grow=12), "regions, lean 1.5, grow 48": MarkRule(lean=1.5, least=2, grow=48),
                  "regions, lean 2.5, grow 48": MarkRule(lean=2.5, least=2, grow=48), "regions, lean 2.5, least 3 (chosen)": MarkRule()}  # fmt: skip
    for name, rule in candidates.items():
        r = evaluate_taught_change(DATA / "oscd", DESIGN, SceneOptions("sentinel2"), clicks=(1, 3, 10), rounds=2, seeds=3, rule=rule)
        print(name, {k: round(v["f1"], 3) for k, v in r["pooled"].items()}, flush=True)


def recut() -> None:
    """Marks that also shift the whole map's cut to agree with them (at most LIMIT logit units)."""
    import rscbir.change.taught as taught
    from rscbir.change.marks import MarkRule, mark_regions
    from rscbir.datasets.change_sets import change_set_names
    from rscbir.evaluate import evaluate_taught_change
    from rscbir.presets import SceneOptions
    from rscbir.tiling import TilingConfig

    def shifted(limit):
        def regions(logit, valid, labels, rule=MarkRule()):
            return mark_regions(logit + best_shift(logit, labels, limit), valid, labels, rule)
        return regions

    for name in ("oscd", "levir_cd_samples", "dsifn_cd_samples"):
        for limit in (0, 1.0, 2.5, 5.0):
            taught.mark_regions = shifted(limit)
            if name == "oscd":
                r = evaluate_taught_change(DATA / name, DESIGN, SceneOptions("sentinel2"), clicks=(1, 3, 10), rounds=2, seeds=3)
            else:
                root = DATA / name
                r = evaluate_taught_change(root, change_set_names(root)[:6], SceneOptions(), TilingConfig(64), clicks=(1, 3, 10), rounds=2, seeds=3)
            print(name, "limit", limit, {k: round(v["f1"], 3) for k, v in r["pooled"].items()}, flush=True)


def best_shift(logit, labels, limit) -> float:
    at = labels >= 0
    if not at.any():
        return 0.0
    v, y = np.nan_to_num(logit[at], nan=0.0), labels[at]
    candidates = np.concatenate([[0.0], -v + 1e-3, -v - 1e-3])
    best = (-1, 0.0)
    for t in candidates[np.abs(candidates) <= limit]:
        score = int(((v + t > 0) == (y == 1)).sum())
        if score > best[0] or (score == best[0] and abs(t) < abs(best[1])):
            best = (score, float(t))
    return best[1]


def _oscd(names):
    from rscbir.change.evidence import default_cache
    from rscbir.change.training import labelled_evidence
    from rscbir.datasets.change_sets import labelled_pairs
    from rscbir.presets import SceneOptions
    from rscbir.tiling import TilingConfig

    out, meta = [], None
    for pair in labelled_pairs(DATA / "oscd", names, SceneOptions("sentinel2")):
        evidence, meta = labelled_evidence(pair, TilingConfig(32), cache=default_cache())
        out.append((evidence, pair.truth & evidence.valid))
    return out, meta


def heads() -> None:
    from rscbir.change.evidence import PairEvidence
    from rscbir.change.head import HeadTraining, train_change_head
    from rscbir.change.taught import taught_change_map

    design, meta = _oscd(DESIGN)
    confirm, _ = _oscd(CONFIRM)

    def subset(ev, keep):
        idx = [k for k, n in enumerate(ev.names) if keep(n)]
        return PairEvidence(ev.channels[idx], [ev.names[k] for k in idx], ev.valid, ev.scores)

    def per_pair_z(ev):
        x = ev.channels.astype(np.float32)
        for k in range(len(x)):
            values = x[k][ev.valid]
            median = np.median(values)
            mad = 1.4826 * np.median(np.abs(values - median)) or values.std() + 1e-6
            x[k] = np.clip((x[k] - median) / mad, -50, 50)
        return PairEvidence(x.astype(np.float16), ev.names, ev.valid, ev.scores)

    def f1(pairs, head):
        tp = fp = fn = 0
        for ev, t in pairs:
            m = taught_change_map(ev, head).mask
            tp, fp, fn = tp + (m & t).sum(), fp + (m & ~t).sum(), fn + (~m & t).sum()
        return round(2 * tp / (2 * tp + fp + fn), 3)

    keeps = {"all channels": lambda n: True, "no directions": lambda n: "direction" not in n,
             "directions of stages 0-1": lambda n: "direction" not in n or n.startswith(("stage0", "stage1"))}  # fmt: skip
    for kname, keep in keeps.items():
        for zname, z in (("", lambda e: e), (", per-pair robust z", per_pair_z)):
            if zname and kname == "directions of stages 0-1":
                continue
            d = [(z(subset(e, keep)), t) for e, t in design]
            c = [(z(subset(e, keep)), t) for e, t in confirm]
            for tname, training in {"hidden 32": HeadTraining(), "hidden 8, weight decay 0.1": HeadTraining(hidden=8, weight_decay=0.1)}.items():
                start = time.time()
                head = train_change_head(d, meta, training)
                print(f"{kname}{zname}, {tname}: design {f1(d, head)} confirmation {f1(c, head)} ({time.time() - start:.0f} s)", flush=True)


def cuts() -> None:
    from rscbir.change.areas import drop_small_areas, smooth_scores
    from rscbir.change.evidence import default_cache
    from rscbir.change.training import labelled_evidence
    from rscbir.datasets.change_sets import change_set_names, labelled_pairs
    from rscbir.presets import SceneOptions
    from rscbir.thresholds import Threshold
    from rscbir.tiling import TilingConfig

    halves = {"OSCD design": (DATA / "oscd", DESIGN, SceneOptions("sentinel2"), 32), "OSCD confirmation": (DATA / "oscd", CONFIRM, SceneOptions("sentinel2"), 32)}
    for name in ("levir_cd_samples", "dsifn_cd_samples"):
        names = change_set_names(DATA / name)
        halves[f"{name} first 6"] = (DATA / name, names[:6], SceneOptions(), 64)
        halves[f"{name} rest"] = (DATA / name, names[6:], SceneOptions(), 64)
    candidates = {r: (lambda v, r=r: Threshold.parse(r).value(v)) for r in ("robust:3", "robust:2", "robust:1", "otsu", "percentile:80")}
    candidates["mixture (2 Gaussians, d >= 1.5)"] = mixture_cut
    for label, (root, names, options, size) in halves.items():
        data = []
        for pair in labelled_pairs(root, names, options):
            evidence, _ = labelled_evidence(pair, TilingConfig(size), cache=default_cache())
            data.append((evidence, pair.truth & evidence.valid))
        for method in ("fusion", "cva", "dense"):
            line = []
            for rule_name, rule in candidates.items():
                tp = fp = fn = 0
                for ev, truth in data:
                    raw = ev.scores.pixels[method]
                    valid = np.isfinite(raw) & ev.valid
                    smoothed = smooth_scores(raw, 1.0)
                    mask = drop_small_areas(valid & (np.nan_to_num(smoothed, nan=-np.inf) > rule(smoothed[valid])), 10)
                    tp, fp, fn = tp + (mask & truth).sum(), fp + (mask & ~truth).sum(), fn + (~mask & truth).sum()
                line.append(f"{rule_name} {2 * tp / max(2 * tp + fp + fn, 1):.3f}")
            print(label, method, " | ".join(line), flush=True)


def loco() -> None:
    """Leave one design city out: train the head on four, map the fifth; the head's logit alone, the label-free one,
    and blends of both (each 0 at its own cut), pooled over the five held-out cities."""
    from rscbir.change.areas import drop_small_areas
    from rscbir.change.head import HeadTraining, train_change_head
    from rscbir.change.taught import starting_logit

    design, meta = _oscd(DESIGN)
    totals: dict[str, np.ndarray] = {}
    for k, city in enumerate(DESIGN):
        head = train_change_head([p for j, p in enumerate(design) if j != k], meta, HeadTraining())
        evidence, truth = design[k]
        own, free = (np.clip(starting_logit(evidence, h, 1.0)[0], -10, 10) for h in (head, None))
        for name, logit in (("head", own), ("label-free fusion", free), ("mean of both", (own + free) / 2),
                            ("head + 0.5 label-free", own + 0.5 * free), ("min of both", np.minimum(own, free))):  # fmt: skip
            mask = drop_small_areas(evidence.valid & (np.nan_to_num(logit, nan=-99) > 0), 10)
            totals[name] = totals.get(name, 0) + np.array([(mask & truth).sum(), (mask & ~truth).sum(), (~mask & truth).sum()])
        print(f"after {city}:", {n: round(2 * c[0] / (2 * c[0] + c[1] + c[2]), 3) for n, c in totals.items()}, flush=True)


def mixture_cut(values, min_weight=0.05, min_separation=1.5) -> float:
    """Two Gaussians fitted by EM: when the upper one holds >= min_weight and is well apart (Ashman's D), cut where
    it becomes the likelier (never above robust:3); otherwise robust:3."""
    from rscbir.thresholds import Threshold

    rng = np.random.default_rng(0)
    x = np.sort(values[rng.choice(len(values), min(len(values), 50000), replace=False)])
    mean, sd, weight = np.array([np.median(x), np.percentile(x, 95)]), np.array([x.std() / 2 + 1e-6] * 2), np.array([0.9, 0.1])
    for _ in range(100):
        p = weight / sd * np.exp(-0.5 * ((x[:, None] - mean) / sd) ** 2) + 1e-300
        r = p / p.sum(1, keepdims=True)
        nk = r.sum(0) + 1e-9
        weight, mean = nk / len(x), (r * x[:, None]).sum(0) / nk
        sd = np.sqrt((r * (x[:, None] - mean) ** 2).sum(0) / nk) + 1e-6
    hi, lo = int(np.argmax(mean)), int(np.argmin(mean))
    robust = Threshold.parse("robust:3").value(values)
    if weight[hi] < min_weight or (mean[hi] - mean[lo]) / np.sqrt((sd[0] ** 2 + sd[1] ** 2) / 2) < min_separation:
        return robust
    grid = np.linspace(mean[lo], mean[hi], 400)
    upper = weight[hi] / sd[hi] * np.exp(-0.5 * ((grid - mean[hi]) / sd[hi]) ** 2)
    lower = weight[lo] / sd[lo] * np.exp(-0.5 * ((grid - mean[lo]) / sd[lo]) ** 2)
    return min(grid[np.argmax(upper >= lower)] if (upper >= lower).any() else mean[hi], robust)


if __name__ == "__main__":
    {"rules": rules, "recut": recut, "heads": heads, "cuts": cuts, "loco": loco}[sys.argv[1] if len(sys.argv) > 1 else "rules"]()

"""Change from marks, designs explored (issue 20; none ships yet): can a few clicks teach OSCD's notion of change?

Each OSCD city is scored once at pixel level (rscbir's fusion, dense and CVA maps, and each band's signed residual
after the invariant-pixel regression), cached in benchmarks/_work. Clicks are simulated from the labels as a user
would make them (seeded; half in distinct changed components, half in unchanged ground, a click is one pixel) and
three designs are compared with the label-free default, pooled pixel F1 over 3 seeds:

* ``lr:<evidence>``  a ridge logistic regression over standardised per-pixel evidence, trained on the marked pixels
  (and their ring) and on 4000 pseudo-labels from the label-free mask far from the marks;
* ``regions``        hysteresis candidate areas (fusion robust z > 2, kept by default when their peak passes 3), each
  kept or dropped by its nearest marked prototype (cosine of mean signed residuals and scores).

    python benchmarks/explore_change_marks.py
"""
import os, pickle, sys, time, datetime as dt
from pathlib import Path

import numpy as np
from scipy import ndimage, optimize

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from record import record  # noqa: E402

DATA = Path(os.environ.get("RSCBIR_DATA", HERE.parents[1] / "shared" / "data"))
WORK = HERE / "_work" / "change_marks"
DESIGN = ["abudhabi", "aguasclaras", "bercy", "bordeaux", "hongkong"]
CONFIRM = ["mumbai", "nantes", "paris", "pisa", "rennes"]

def evidence(city):
    WORK.mkdir(parents=True, exist_ok=True)
    f = WORK / f"{city}.pkl"
    if os.path.exists(f):
        return pickle.load(open(f, "rb"))
    from rscbir.datasets.oscd import city_pair, RGB_BANDS, oscd_labels_on
    from rscbir.change.scores import score_change, PixelMosaic
    from rscbir.change.pairs import paired_patches
    from rscbir.change.radiometry import invariant_regression
    from rscbir.change.detection import change_map
    from rscbir.models.load import load_feature_model, configure_threads
    from rscbir.tiling import TilingConfig, aligned_grid, EdgePolicy
    configure_threads()
    d = DATA / "oscd" / city
    b, a = city_pair(d); grid = aligned_grid([b, a])
    model = load_feature_model(list(RGB_BANDS), rgb=list(RGB_BANDS))
    scores = score_change(b.select(list(RGB_BANDS)), a.select(list(RGB_BANDS)), model, TilingConfig(32), grid, spectral=(b, a), pixel_maps=True)
    tiling = TilingConfig(32, edge=EdgePolicy.FIT)
    gain, offset, spread = invariant_regression(b, a, tiling, grid)
    mos = [PixelMosaic(grid) for _ in b.band_names]
    for p in paired_patches(b, a, tiling, grid, batch=256):
        res = (p.after - gain[None, :, None, None] * p.before - offset[None, :, None, None]) / spread[None, :, None, None]
        for k in range(len(mos)):
            mos[k].add(p.records, res[:, k])
    signed = np.stack([m.result() for m in mos])
    truth = oscd_labels_on(d, grid)
    label_free = change_map(scores, "fusion").mask
    out = {"pixels": {k: v for k, v in scores.pixels.items()}, "signed": signed, "truth": truth, "label_free": label_free}
    pickle.dump(out, open(f, "wb"))
    return out

def standardise(channels, valid):
    stack = np.stack([c[valid] for c in channels]).astype(np.float32)
    med = np.median(stack, axis=1, keepdims=True); mad = 1.4826 * np.median(np.abs(stack - med), axis=1, keepdims=True)
    mad = np.where(mad > 1e-6, mad, 1.0)
    return np.clip((stack - med) / mad, -10, 10)

def features(ev, kind):
    px = ev["pixels"]; valid = np.all([np.isfinite(v) for v in px.values()], axis=0) & np.all(np.isfinite(ev["signed"]), axis=0)
    base = []
    for name in ("fusion", "dense", "cva"):
        base.append(px[name])
    fill = np.where(valid, px["fusion"], np.nanmedian(px["fusion"]))
    base += [ndimage.gaussian_filter(fill, s) for s in (2, 6)]
    chans = list(base)
    if "signed" in kind:
        chans += list(ev["signed"])
    if "sdir" in kind:  # unit direction of the signed residual, times nothing
        s = ev["signed"]; n = np.sqrt((s ** 2).sum(0)) + 1e-6
        chans += list(s / n)
    return standardise(chans, valid), valid

def logistic(x, y, w, l2):
    C = x.shape[0]
    def loss(t):
        z = t[:C] @ x + t[C]; p = 1 / (1 + np.exp(-np.clip(z, -30, 30)))
        r = w * (p - y)
        return -(w * (y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12))).sum() + l2 * t[:C] @ t[:C], np.concatenate([x @ r + 2 * l2 * t[:C], [r.sum()]])
    t = optimize.minimize(loss, np.zeros(C + 1), jac=True, method="L-BFGS-B").x
    return t[:C], t[C]

def clicks(truth, N, seed):
    rng = np.random.default_rng(seed); lab, n = ndimage.label(truth)
    nc = (N + 1) // 2; nu = N - nc
    pts = []
    for c in rng.permutation(np.arange(1, n + 1))[:nc]:
        rr, cc = np.nonzero(lab == c); k = rng.integers(len(rr)); pts.append((rr[k], cc[k], 1))
    rr, cc = np.nonzero(~truth)
    for k in rng.choice(len(rr), nu, replace=False):
        pts.append((rr[k], cc[k], 0))
    return pts

def learned(ev, pts, kind, mark_weight, l2, pseudo=4000, radius=1, far_px=8, smooth=1.0, min_px=10, cut=0.5):
    X, valid = features(ev, kind)
    H, W = valid.shape; pos = np.full((H, W), -1); pos[valid] = np.arange(valid.sum())
    marked = np.zeros((H, W), np.int8)
    for r, c, lab in pts:
        marked[max(r - radius, 0): r + radius + 1, max(c - radius, 0): c + radius + 1] = 1 if lab else -1
    marked[~valid] = 0
    rows, ys, ws = [], [], []
    for v, t in ((1, 1.0), (-1, 0.0)):
        at = pos[marked == v]
        if len(at): rows.append(at); ys.append(np.full(len(at), t)); ws.append(np.full(len(at), mark_weight / len(at)))
    far = ndimage.distance_transform_edt(marked == 0) >= far_px
    pool = np.flatnonzero((far & valid)[valid])
    if pseudo and len(pool):
        pk = np.random.default_rng(0).choice(pool, min(pseudo, len(pool)), replace=False)
        rows.append(pk); ys.append(ev["label_free"][valid][pk].astype(float)); ws.append(np.full(len(pk), 1.0 / len(pk)))
    idx = np.concatenate(rows); y = np.concatenate(ys); w = np.concatenate(ws)
    coef, bias = logistic(X[:, idx], y, w / w.sum(), l2)
    p = np.full((H, W), np.nan, np.float32); p[valid] = 1 / (1 + np.exp(-np.clip(coef @ X + bias, -30, 30)))
    filled = np.where(valid, p, 0); sm = ndimage.gaussian_filter(filled, smooth)
    mask = valid & (sm > cut)
    lab, n = ndimage.label(mask); sizes = ndimage.sum(mask, lab, np.arange(1, n + 1))
    return np.isin(lab, np.flatnonzero(sizes >= min_px) + 1)

def pooled(evs, fn):
    tp = fp = fn_ = 0
    for ev in evs:
        for m in fn(ev):
            t = ev["truth"]; tp += (m & t).sum(); fp += (m & ~t).sum(); fn_ += (~m & t).sum()
    return round(float(2 * tp / max(2 * tp + fp + fn_, 1)), 3)


def regions(ev, pts, tau=0.5, low=2.0, high=3.0, nb=2, smooth=1.0, min_px=10):
    px = ev["pixels"]; valid = np.all([np.isfinite(v) for v in px.values()], axis=0) & np.all(np.isfinite(ev["signed"]), axis=0)
    X = np.full((16,) + valid.shape, 0, np.float32)
    X[:, valid] = standardise(list(ev["signed"]) + [px["fusion"], px["dense"], px["cva"]], valid)
    fus = np.where(valid, px["fusion"], np.nanmedian(px["fusion"])); fus = ndimage.gaussian_filter(fus, smooth)
    med = np.median(fus[valid]); mad = 1.4826 * np.median(np.abs(fus[valid] - med))
    z = (fus - med) / mad
    cand = valid & (z > low)
    lab, n = ndimage.label(cand)
    idx = np.arange(1, n + 1)
    sizes = ndimage.sum(cand, lab, idx)
    desc = np.stack([ndimage.mean(X[k], lab, idx) for k in range(X.shape[0])], axis=1)  # (n, 16)
    peak = ndimage.maximum(z, lab, idx)
    def unit(v): return v / (np.linalg.norm(v, axis=-1, keepdims=True) + 1e-9)
    desc = unit(desc)
    protos = {1: [], 0: []}
    for r, c, l in pts:
        win = (slice(max(r - nb, 0), r + nb + 1), slice(max(c - nb, 0), c + nb + 1))
        k = lab[r, c]
        protos[l].append(desc[k - 1] if k > 0 else unit(X[(slice(None),) + win].reshape(X.shape[0], -1).mean(1)))
    sim = {l: (np.max(np.stack(v) @ desc.T, axis=0) if v else np.full(n, -1.0)) for l, v in protos.items()}
    keep = (peak > high) & (sizes >= min_px)  # the label-free decision
    keep |= (sim[1] > tau) & (sim[1] > sim[0]) & (sizes >= min_px)
    keep &= ~((sim[0] > tau) & (sim[0] > sim[1]))
    return np.isin(lab, idx[keep])


DESIGNS = {
    "lr: magnitudes": lambda ev, pts: learned(ev, pts, "mag", 1.0, 0.1),
    "lr: magnitudes + signed band residuals": lambda ev, pts: learned(ev, pts, "signed", 1.0, 0.1),
    "lr: magnitudes + residual directions": lambda ev, pts: learned(ev, pts, "sdir", 1.0, 0.1),
    "regions: nearest prototype (tau 0.5)": lambda ev, pts: regions(ev, pts, 0.5, 2.0),
}


def main() -> None:
    start = time.perf_counter()
    lines = [f"## Change from marks: designs explored ({dt.date.today().isoformat()})", "",
             "Command: `python benchmarks/explore_change_marks.py`. OSCD, 32 px patches, pixel level; clicks simulated from the "
             "labels (half in distinct changed components, half in unchanged ground; one pixel each), 3 seeds; pooled pixel F1. "
             "Designs chosen on the design cities; confirmation cities reported apart. None of them ships: see issue 20.", "",
             "| design | cities | no marks | 1 click | 3 clicks | 10 clicks |", "|---|---|---:|---:|---:|---:|"]
    figures = {}
    for split, names in (("design", DESIGN), ("confirmation", CONFIRM)):
        evs = [evidence(c) for c in names]
        base = pooled(evs, lambda ev: [ev["label_free"]])
        lines.append(f"| label-free default (fusion, robust:3) | {split} | {base:.3f} | | | |")
        figures[f"{split}/label-free"] = base
        for name, design in DESIGNS.items():
            row = {n: pooled(evs, lambda ev: [design(ev, clicks(ev["truth"], n, s)) for s in (0, 1, 2)]) for n in (1, 3, 10)}
            figures[f"{split}/{name}"] = row
            lines.append(f"| {name} | {split} | | {row[1]:.3f} | {row[3]:.3f} | {row[10]:.3f} |")
            print(split, name, row, flush=True)
    lines.append(f"\nRun time {time.perf_counter() - start:.0f} s (CNN scoring cached in benchmarks/_work after the first run).")
    record("\n".join(lines), "change_marks_explored", figures)


if __name__ == "__main__":
    main()

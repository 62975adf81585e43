"""Which FAISS type for a large index: recall@10, query time and memory of each, at 1M vectors.

What `auto_index_type` past 1M rests on. Each type is built over the same vectors, written, then opened in
a fresh process the way rscbir opens segments (``IO_FLAG_MMAP_IFC``), where 200 queries run one at a time;
SQ/PQ types fetch 4 k candidates and re-rank them on the stored vectors (memory-mapped), as rscbir does.
Memory: resident MiB right after opening, and after the 200 queries (file pages of the maps included).

Vectors: ``--fill jitter`` = the real Lite0 NAIP vectors + jittered copies (bench_query.py's corpus);
``--fill gaussian`` = Gaussian draws with the real vectors' mean and covariance, a structureless worst case.

    python benchmarks/bench_index_types.py [--size 1000000] [--fill jitter] [--types IVF4096,SQ8 HNSW32]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_index_scale import fill  # noqa: E402
from bench_query import WORK, real_corpus  # noqa: E402
from record import record  # noqa: E402

CHILD = r"""
import json, sys, time
import faiss, numpy as np

def resident():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

path, kind, nprobe, ef, queries, vectors = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
q = np.load(queries)
before = resident()
index = faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC)
x = np.load(vectors, mmap_mode="r")
if ef:
    index.hnsw.efSearch = ef
if nprobe:
    faiss.extract_index_ivf(index).nprobe = nprobe
opened = resident() - before
rerank = "SQ" in kind or "PQ" in kind
times, found = [], []
for v in q:
    start = time.perf_counter()
    d, i = index.search(v[None], 40 if rerank else 10)
    if rerank:
        ids = np.sort(i[0][i[0] >= 0])
        i = ids[np.argsort(-(np.asarray(x[ids]) @ v))[:10]][None]
    times.append(time.perf_counter() - start)
    found.append(i[0].tolist())
print(json.dumps({"open_mib": opened, "after_mib": resident() - before, "p50_ms": 1000 * np.percentile(times, 50),
                  "p95_ms": 1000 * np.percentile(times, 95), "found": found}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--fill", choices=["jitter", "gaussian"], default="jitter")
    parser.add_argument("--types", nargs="+", default=["IVF4096,SQ8", "IVF4096,PQ32", "HNSW32"])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    real, nn_distance = real_corpus(128)
    head = real if args.fill == "jitter" else real[:0]
    x = np.concatenate([head, fill(real, args.size - len(head), nn_distance, rng, args.fill)])[: args.size].astype(np.float32)
    q = fill(real, 200, nn_distance, rng, args.fill)
    paths = {name: WORK / f"types_{name}.npy" for name in ("x", "q")}
    np.save(paths["x"], x)
    np.save(paths["q"], q)
    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    _, truth = exact.search(q, 10)
    del exact
    rows = []
    for kind in args.types:
        start = time.perf_counter()
        index = faiss.index_factory(x.shape[1], kind, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            index.train(x[np.sort(rng.permutation(len(x))[:200_000])])
        for s in range(0, len(x), 65536):
            index.add(x[s : s + 65536])
        build_s = time.perf_counter() - start
        target = WORK / "types.index"
        faiss.write_index(index, str(target))
        del index
        settings = [(p, 0) for p in (16, 32, 64, 128)] if "IVF" in kind else [(0, e) for e in (128, 256, 512)]
        for nprobe, ef in settings:
            child = subprocess.run([sys.executable, "-c", CHILD, str(target), kind, str(nprobe), str(ef), str(paths["q"]), str(paths["x"])],
                                   capture_output=True, text=True, check=True)  # fmt: skip
            doc = json.loads(child.stdout.strip().splitlines()[-1])
            recall = float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth.tolist(), doc.pop("found"))]))
            rows.append({"kind": kind, "build_s": build_s, "file_mib": target.stat().st_size / 2**20, "nprobe": nprobe, "ef": ef,
                         "recall": recall, **doc})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
        target.unlink()
    for p in paths.values():
        p.unlink()
    lines = [
        f"\n## FAISS types at {args.size // 1_000_000}M: {args.fill} fill ({dt.date.today().isoformat()})\n",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores. Command: `python benchmarks/bench_index_types.py --size {args.size} "
        f"--fill {args.fill} --types {' '.join(args.types)}`. Opened memory-mapped in a fresh process; SQ/PQ re-rank 40 candidates "
        "on the stored vectors; 200 queries one at a time; recall@10 against exact search. Resident MiB after opening and after "
        "the 200 queries (file pages of the maps included).\n",
        "| type | build s | file MiB | nprobe / efSearch | recall@10 | p50 / p95 ms | MiB opened | MiB after 200 queries |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *(f"| {r['kind']} | {r['build_s']:.0f} | {r['file_mib']:.0f} | {r['nprobe'] or r['ef']} | {r['recall']:.3f} "
          f"| {r['p50_ms']:.2f} / {r['p95_ms']:.2f} | {r['open_mib']:.0f} | {r['after_mib']:.0f} |" for r in rows),
        "",
    ]  # fmt: skip
    record("\n".join(lines), f"index_types_{args.size}_{args.fill}", rows)


if __name__ == "__main__":
    main()

"""Query latency, recall@10 against exact search, and memory, per FAISS index type and size.

Vectors: real EfficientNet-Lite0 embeddings of every 64 px patch (stride 32) of all ten NAIP
years (about 5,900 vectors), reduced to 128-d by centred PCA as `rscbir index build --dim 128` does for
large indexes. Sizes beyond the real count are filled with *synthetic* vectors: real vectors plus
Gaussian noise scaled to the median nearest-neighbour distance, re-normalised, so the fill keeps
the real data's cluster structure. Queries are 200 real vectors, jittered the same way, so no query
is itself in the index.

    python benchmarks/bench_query.py [--sizes 10000 100000 1000000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import record  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("RSCBIR_DATA", HERE.parents[1] / "shared" / "data"))
WORK = HERE / "_work"
TYPES = ["Flat", "HNSW32", "IVF4096,SQ8", "IVF4096,PQ32"]


def real_vectors(dim: int) -> np.ndarray:
    """Lite0 embeddings of all NAIP years (cached in benchmarks/_work), PCA to ``dim``."""
    cache = WORK / f"naip_all_years_{dim}.npy"
    if cache.exists():
        return np.load(cache)
    from rscbir.embed import EmbedOptions, embed_scenes
    from rscbir.models.load import configure_threads, model_for_scenes
    from rscbir.models.whitening import PCAWhitening
    from rscbir.presets import open_scenes
    from rscbir.tiling import TilingConfig

    configure_threads()
    paths = sorted((DATA / "naip_timeseries").glob("*.tif"))
    scenes, preset = open_scenes(paths, "naip")
    model, scenes = model_for_scenes(scenes, preset)
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        store = embed_scenes(scenes, Path(tmp) / "emb", model, TilingConfig(64, 32), options=EmbedOptions(dtype="float32"))
        full = np.asarray(store.vectors, dtype=np.float32)
    reduced = PCAWhitening.fit(full, dim, 0.0).transform(full).astype(np.float32)
    np.save(cache, reduced)
    return reduced


def real_corpus(dim: int) -> tuple[np.ndarray, float]:
    """The real vectors (see :func:`real_vectors`) and their median nearest-neighbour distance, the noise scale of
    the synthetic fill; exits with a message when the NAIP data is absent."""
    if not (DATA / "naip_timeseries").is_dir():
        sys.exit(f"{DATA}/naip_timeseries not found; set RSCBIR_DATA")
    WORK.mkdir(exist_ok=True)
    real = real_vectors(dim)
    sims = real[:2000] @ real[:2000].T
    np.fill_diagonal(sims, -1)
    return real, float(np.median(np.sqrt(np.maximum(0, 2 - 2 * sims.max(axis=1)))))


def jitter(vectors: np.ndarray, n: int, scale: float, rng) -> np.ndarray:
    picks = vectors[rng.integers(0, len(vectors), n)]
    out = picks + rng.normal(0, scale / np.sqrt(vectors.shape[1]), picks.shape).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def rerank_latency(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray) -> tuple[float, float]:
    """ms per query of the two-search expanded query and of a feedback query, as rscbir.query runs them."""
    from rscbir.rerank import QueryExpansion, feedback_vector

    expansion, rng = QueryExpansion(), np.random.default_rng(1)
    start = time.perf_counter()
    for q in queries:
        scores, ids = index.search(q[None], expansion.k + 1)
        keep = ids[0][1:]
        order = np.argsort(keep)
        neighbours = vectors[keep[order]][np.argsort(order)]
        index.search(expansion.expand(q[None], neighbours[None], scores[:, 1:]), 10)
    with_qe = (time.perf_counter() - start) / len(queries) * 1000
    marks = rng.integers(0, len(vectors), (len(queries), 20))
    start = time.perf_counter()
    for q, marked in zip(queries, marks):
        right = vectors[np.sort(marked[:12])]
        index.search(feedback_vector(np.vstack([q[None], right]), vectors[np.sort(marked[12:])])[None], 10)
    with_feedback = (time.perf_counter() - start) / len(queries) * 1000
    return with_qe, with_feedback


def index_bytes(index: faiss.Index) -> int:
    with tempfile.NamedTemporaryFile() as handle:
        faiss.write_index(index, handle.name)
        return os.path.getsize(handle.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    from rscbir.index import build_faiss

    rng = np.random.default_rng(0)
    real, nn_distance = real_corpus(args.dim)
    queries = jitter(real, args.queries, nn_distance, rng)
    print(f"{len(real)} real vectors, {args.dim}-d; median nearest-neighbour distance {nn_distance:.3f}", flush=True)

    rows, rerank = [], []
    for size in args.sizes:
        fill = jitter(real, max(0, size - len(real)), nn_distance, rng)
        vectors = np.concatenate([real[:size], fill])[:size].astype(np.float32)
        _, truth = build_faiss(vectors, "Flat").search(queries, 10)
        for factory in TYPES:
            if "IVF" in factory and size < 39 * 4096:
                factory = factory.replace("4096", "1024" if size >= 39 * 1024 else "256")
            start = time.perf_counter()
            index = build_faiss(vectors, factory)
            build = time.perf_counter() - start
            index.search(queries[:5], 10)
            start = time.perf_counter()
            found = np.vstack([index.search(q[None], 10)[1] for q in queries])
            latency = (time.perf_counter() - start) / len(queries) * 1000
            recall = float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found)]))
            size_mb = index_bytes(index) / 2**20
            rows.append((size, factory, build, latency, recall, size_mb))
            print(f"{size:>8} {factory:<14} build {build:7.1f} s  {latency:7.3f} ms/query  recall@10 {recall:.3f}  {size_mb:8.1f} MiB", flush=True)
            if factory.startswith("HNSW"):
                rerank.append((size, factory, *rerank_latency(index, vectors, queries)))
                print(f"{size:>8} {factory:<14} with query expansion {rerank[-1][2]:.3f} ms, with feedback {rerank[-1][3]:.3f} ms", flush=True)
            del index

    lines = [
        f"\n## Query latency and recall ({dt.date.today().isoformat()})\n",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, faiss {faiss.__version__}. Command: "
        f"`python benchmarks/bench_query.py --sizes {' '.join(map(str, args.sizes))} --dim {args.dim}`. "
        f"{len(real)} real vectors (EfficientNet-Lite0, all 10 NAIP years, 64 px patches, PCA to {args.dim}-d); "
        "the rest of each size is synthetic fill (real vectors + Gaussian noise at the median nearest-neighbour "
        f"distance, {nn_distance:.3f}). {len(queries)} jittered real queries, one at a time; recall@10 against exact "
        "(Flat) search; HNSW efSearch 128, IVF nprobe 64 (rscbir's defaults). Memory = serialised index size.\n",
        "| vectors | index | build (s) | ms / query | recall@10 | memory (MiB) |",
        "|---:|---|---:|---:|---:|---:|",
        *(f"| {n} | {f} | {b:.1f} | {lat:.3f} | {r:.3f} | {m:.1f} |" for n, f, b, lat, r, m in rows),
        "",
        "The ranking users get, per query: query expansion = a search for the 10 nearest, their vectors gathered "
        "from the memory-mapped store, the expanded query searched again (`rscbir.query.query_vector`); feedback = "
        "the Rocchio direction of the query and 20 marked vectors, one search.\n",
        "| vectors | index | ms / query with query expansion | ms / query with feedback (20 marks) |",
        "|---:|---|---:|---:|",
        *(f"| {n} | {f} | {qe:.3f} | {fb:.3f} |" for n, f, qe, fb in rerank),
    ]
    record("\n".join(lines), "query", [dict(zip(("n", "factory", "build_s", "latency_ms", "recall", "memory_mib"), r)) for r in rows])


if __name__ == "__main__":
    main()

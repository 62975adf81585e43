"""FAISS index types for inner product on L2-normalised vectors: which type for how many vectors, training,
adding in chunks, search-time knobs, reading and writing."""

from __future__ import annotations

import errno
import math
from pathlib import Path

import faiss
import numpy as np

from rscbir.errors import IndexFileError
from rscbir.index.layout import CHUNK

EXACT_LIMIT = 100_000  # up to this many vectors "auto" keeps exact search
MAX_NLIST = 65536  # the most inverted lists "auto" asks for

GRAPH_LIMIT = 1_000_000  # past this many vectors "auto" stops adding HNSW graphs: 256 MiB of RAM per million, each


def auto_index_type(count: int) -> str:
    """FAISS factory string for ``count`` vectors: exact up to 100k, HNSW32 up to 1M, IVF-SQ8 beyond.

    Measured at 1M (benchmarks/bench_index_types.py, docs/scaling.md): HNSW32 holds its graph in memory (272 MiB opened, 748 MiB
    file); IVF4096,SQ8 opens in 2 MiB from a 132 MiB file, builds faster, and with the candidates
    re-ranked on the stored vectors reaches the same recall at a larger nprobe.
    """
    if count <= EXACT_LIMIT:
        return "Flat"
    if count <= GRAPH_LIMIT:
        return "HNSW32"
    nlist = int(min(MAX_NLIST, max(1024, 2 ** round(math.log2(4 * math.sqrt(count))))))
    return f"IVF{nlist},SQ8"


def train_faiss_probe(dim: int, factory: str) -> faiss.Index:
    """An empty FAISS index of type ``factory`` (inner product); :class:`IndexFileError` for a type FAISS cannot build."""
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise IndexFileError(f"FAISS cannot build index type {factory!r} ({str(exc).splitlines()[-1]}); try Flat, HNSW32 or IVF1024,PQ32") from None


def train_faiss(vectors: np.ndarray, factory: str) -> faiss.Index:
    """An empty FAISS index of type ``factory``, trained on a sample of up to 200k ``vectors`` when the type needs it."""
    n, dim = vectors.shape
    index = train_faiss_probe(dim, factory)
    if not index.is_trained:
        needed = faiss.extract_index_ivf(index).nlist if "IVF" in factory else 256
        if n < needed:
            raise IndexFileError(f"index type {factory!r} needs at least {needed} vectors to train, the index has {n}; use Flat")
        sample = vectors[np.sort(np.random.default_rng(0).permutation(n)[:200_000])]
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return index


def add_in_chunks(index: faiss.Index, vectors: np.ndarray) -> faiss.Index:
    """Add ``vectors`` (an array or memory map) ``CHUNK`` rows at a time, as float32, and tune the search knobs."""
    for start in range(0, len(vectors), CHUNK):
        index.add(np.ascontiguousarray(vectors[start : start + CHUNK], dtype=np.float32))
    tune_search(index)
    return index


def build_faiss(vectors: np.ndarray, factory: str) -> faiss.Index:
    """A FAISS index (inner product) over float vectors, trained when the type needs it."""
    return add_in_chunks(train_faiss(vectors, factory), vectors)


def tune_search(index: faiss.Index) -> None:
    """Search-time knobs for recall >= 0.95 at 10 (benchmarks/bench_query.py, docs/scaling.md).

    HNSW's candidate list grows with the index: efSearch 128 holds recall@10 0.97 at 300k augmented
    vectors but gives 0.85-0.87 at 1M, where 512 gives 0.95-0.96 for 0.45 ms a query.
    """
    if isinstance(index, faiss.IndexHNSW):
        wanted = int(min(1024, max(128, 128 * index.ntotal / 250_000)))
        index.hnsw.efSearch = max(index.hnsw.efSearch, wanted)
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return
    ivf.nprobe = max(ivf.nprobe, min(ivf.nlist, max(64, ivf.nlist // 64)))


def read_faiss(target: Path, index_type: str | None) -> faiss.Index:
    """A segment's FAISS file: memory-mapped, except graphs. An IVF search reads a few contiguous lists and a flat one
    the whole file in order, but an HNSW search jumps between thousands of vectors: through a map on a cold page
    cache each jump read megabytes around it (kernel read-around), so HNSW files are read whole."""
    flags = 0 if (index_type or "").startswith("HNSW") else faiss.IO_FLAG_MMAP_IFC
    index = faiss.read_index(str(target), flags)
    tune_search(index)
    return index


def write_faiss(index: faiss.Index, target: Path) -> None:
    """``faiss.write_index`` with its failures (a full disk, a read-only folder) as the OSError they are."""
    try:
        faiss.write_index(index, str(target))
    except RuntimeError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise OSError(errno.EIO, f"FAISS could not write the index ({lines[-1].strip() if lines else 'write failed'})", str(target)) from None

"""The index folder: a manifest plus immutable segments (catalog + embeddings + FAISS + lookups), written atomically.

* :mod:`rscbir.index.manifest` - typed, frozen manifest, scene, segment and settings records (standard library)
* :mod:`rscbir.index.layout` - file names, reading ``index.json``, checksums, ``rscbir check`` (standard library)
* :mod:`rscbir.index.describe` - what an index holds, for ``rscbir info`` (standard library)
* :mod:`rscbir.index.faiss_types` - which FAISS type for how many vectors, training, search knobs, reading, writing
* :mod:`rscbir.index.rows` - row readers: ``pread`` rows of a ``.npy``, the segments' arrays read as one
* :mod:`rscbir.index.lookup` - per-segment lookups that answer queries without the catalog
* :mod:`rscbir.index.segment` - one segment opened for reading
* :mod:`rscbir.index.search` - search across segments, filters, re-ranking of lossy codes
* :mod:`rscbir.index.reader` - :class:`Index`: an index folder opened for reading
* :mod:`rscbir.index.commit` - :class:`Generation`: new files, then the manifest swap; rollback on failure
* :mod:`rscbir.index.writers` - a segment's catalog, vectors, augmented vectors and FAISS files
* :mod:`rscbir.index.build` - build and append through ``.staging/`` (resumable)
* :mod:`rscbir.index.maintain` - remove scenes or dates, compact segments
* :mod:`rscbir.index.parquet` - the embeddings out as GeoParquet 1.1

Ids run through the segments in manifest order; a search asks every segment and merges by score.
Opening reads no patch (vectors and IVF lists are memory-mapped, HNSW graphs read whole), a query
reads its few rows and lookup records with ``pread``, and the whole catalog is loaded only when asked
for (:attr:`Index.catalog`). Every change writes its new files, fsyncs them, and only then replaces
``index.json``: a kill -9 at any moment leaves the previous complete index readable.

The names below load their module on first use, so ``rscbir info`` (the manifest alone) imports no
numpy or FAISS.
"""

from __future__ import annotations

from rscbir.lazy import lazy_exports

_HOMES = {
    "Index": "reader", "WGS84": "reader",
    "Segment": "segment",
    "StackedRows": "rows", "NpyRows": "rows",
    "SegmentLookup": "lookup",
    "build_index": "build", "BuildSummary": "build", "DEFAULT_AUGMENT": "build", "scene_content_hash": "build",
    "index_settings": "build", "write_generation": "build",
    "remove_from_index": "maintain", "compact_index": "maintain", "MAX_SEGMENTS": "maintain",
    "build_faiss": "faiss_types", "train_faiss": "faiss_types", "auto_index_type": "faiss_types", "EXACT_LIMIT": "faiss_types",
    "EXACT_FILTER_LIMIT": "search",
    "Generation": "commit",
    "Manifest": "manifest", "SceneRecord": "manifest", "SegmentRecord": "manifest", "IndexSettings": "manifest",
    "MANIFEST": "layout", "CHUNK": "layout", "is_index": "layout", "read_manifest": "layout", "verify_index": "layout",
    "describe_index": "describe", "describe_text": "describe",
    "export_embeddings": "parquet",
}  # fmt: skip


__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals())


__all__ = sorted(_HOMES)

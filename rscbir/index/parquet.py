"""Embeddings out as GeoParquet: one row per patch with its footprint, date, scene, grid cell and vector.

The file follows GeoParquet 1.1 (WKB polygons in EPSG:4326, the ``geo`` metadata) with the vector as a
fixed-size list of float32, the layout the Clay, Major TOM and Satellite Embedding products use, so other
tools (DuckDB, geopandas, GDAL, a FAISS script) read it directly. The model and index settings that made
the vectors go into the file metadata under ``rscbir``. Written segment by segment, ``CHUNK`` rows at a
time: memory stays bounded at any index size.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rscbir.atomic import atomic_path
from rscbir.index.layout import CHUNK
from rscbir.index.reader import Index
from rscbir.index.segment import UNREADABLE, corrupt

COLUMNS = ("patch_id", "scene_id", "date", "row", "col")  # copied from the catalog, beside datetime, geometry and the vector
# where each patch lies in its scene's pixels: kept so that an import (`index build --from-embeddings`) can read imagery
WINDOW = ("col_off", "row_off", "width", "height", "transform", "crs", "minx", "miny", "maxx", "maxy", "nodata_fraction")
GEOPARQUET_VERSION = "1.1.0"


def export_embeddings(index: Index, path: str | os.PathLike, column: str = "embedding", search: bool = False) -> int:
    """Write every patch of ``index`` to the GeoParquet file ``path`` (atomically); returns the rows written.

    ``search`` writes the vectors FAISS ranks (database-augmented with ``--augment``) instead of each patch's own.
    """
    dim = index.manifest.dim
    rows = 0
    with atomic_path(path) as tmp:
        writer = None
        try:
            for segment in index.segments:
                source = index.path / segment.record.files["catalog"]
                vectors = segment.search_file if search else segment.vector_file  # pread: no mapped pages stay resident
                try:
                    catalog = pq.ParquetFile(source)
                    start = 0
                    for group in range(catalog.metadata.num_row_groups):
                        window = [c for c in WINDOW if c in catalog.schema_arrow.names]
                        table = catalog.read_row_group(group, columns=[*COLUMNS, *window, "geometry"])
                        block = np.ascontiguousarray(vectors[start : start + len(table)], dtype=np.float32)
                        start += len(table)
                        out = _rows(table, block, dim, column)
                        if writer is None:
                            schema = out.schema.with_metadata(_metadata(index, catalog.schema_arrow.metadata, column, search))
                            writer = pq.ParquetWriter(tmp, schema, compression="zstd")
                        writer.write_table(out.cast(schema), row_group_size=CHUNK)
                        rows += len(out)
                except UNREADABLE as exc:
                    raise corrupt(source, exc) from None
        finally:
            if writer is not None:
                writer.close()
    return rows


def _rows(table: pa.Table, vectors: np.ndarray, dim: int, column: str) -> pa.Table:
    """The export rows of one catalog row group and its vectors."""
    dates = pc.strptime(table["date"].cast(pa.string()), format="%Y-%m-%d", unit="s", error_is_null=True)
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
    return pa.table({
        "patch_id": table["patch_id"].cast(pa.string()),
        "scene_id": table["scene_id"].cast(pa.string()),
        "datetime": dates.cast(pa.timestamp("s", tz="UTC")),
        "row": table["row"].cast(pa.int32()),
        "col": table["col"].cast(pa.int32()),
        **{name: table[name] for name in WINDOW if name in table.column_names},
        "geometry": table["geometry"],
        column: embedding,
    })  # fmt: skip


def _metadata(index: Index, catalog_meta: dict | None, column: str, search: bool) -> dict:
    """GeoParquet ``geo`` metadata (the catalog's geometry column, bbox of the whole index) and rscbir's provenance."""
    geo = json.loads((catalog_meta or {}).get(b"geo", b"{}") or b"{}")
    geometry = dict(geo.get("columns", {}).get("geometry", {"encoding": "WKB", "geometry_types": ["Polygon"]}))
    geometry["bbox"] = list(index.bounds)
    geo = {"version": GEOPARQUET_VERSION, "primary_column": "geometry", "columns": {"geometry": geometry}}
    manifest = index.manifest
    provenance = {
        "format": "rscbir-embeddings",
        "vector_column": column,
        "vectors": "search (database-augmented)" if search else "patch",
        "dim": manifest.dim,
        "dtype": manifest.dtype,  # how the index stored them: an import stores them alike
        "model": manifest.model,
        "pca_dim": manifest.pca_dim,
        "whiten": manifest.whiten,
        "augment": manifest.augment,
        "centre_scenes": manifest.centre_scenes,
        "tiling": manifest.tiling,
        "index": str(Path(index.path).resolve()),
        "generation": manifest.generation,
        "scenes": [{"scene_id": s.scene_id, "date": s.date, "date_source": s.date_source} for s in manifest.scenes],
        "grid": manifest.grid,  # with the scene records below, `index build --from-embeddings` rebuilds this index
        "scene_records": [{k: v for k, v in s.doc.items() if k not in ("content_hash", "patches")} for s in manifest.scenes],
    }  # fmt: skip
    return {b"geo": json.dumps(geo).encode(), b"rscbir": json.dumps(provenance).encode()}


__all__ = ["export_embeddings"]

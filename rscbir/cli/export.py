"""``rscbir export``: an index's embeddings as GeoParquet, for other tools."""

from __future__ import annotations

import click

from rscbir.cli import options


@click.command(name="export", epilog="\b\nExample:\n  rscbir export out/naip_index -o out/naip_embeddings.parquet")
@click.argument("index_dir", type=click.Path(file_okay=False), metavar="INDEX_DIR")
@click.option("-o", "--output", required=True, callback=options.output_file, type=click.Path(dir_okay=False),
              help="GeoParquet file to write: one row per patch, the vector as a fixed-size list of float32.")  # fmt: skip
@click.option("--column", default="embedding", show_default=True, help="Name of the vector column.")
@click.option("--search-vectors", is_flag=True, help="Write the vectors FAISS ranks (database-augmented) instead of each patch's own.")
def export(index_dir, output, column, search_vectors):
    """Write every patch of INDEX_DIR to a GeoParquet 1.1 file: footprint (EPSG:4326), datetime, scene, grid
    row/col and the embedding, with the model that made it in the file metadata (key ``rscbir``)."""
    from rscbir.index import Index
    from rscbir.index.parquet import export_embeddings

    index = Index.open(index_dir, search=False)  # rows only: an HNSW graph would be read whole for nothing
    rows = export_embeddings(index, output, column, search_vectors)
    click.echo(f"{output}: {rows} patches, {index.manifest.dim}-d float32 vectors in column {column!r}", err=True)

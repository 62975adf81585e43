"""``rscbir info``: what rscbir sees in a scene (bands, date, grid), or what an index holds."""

from __future__ import annotations

import json

import click

from rscbir.cli import options


@click.command(epilog="\b\nExamples:\n  rscbir info ../shared/data/oscd/paris/imgs_1\n  rscbir info out/naip_index --json")
@click.argument("target", metavar="SCENE|INDEX_DIR")
@options.scene_options
@options.json_flag("For an index: print JSON instead of text (a scene is always JSON).")
def info(target, scene_opts, as_json):
    """Print SCENE's id, date, bands, CRS and grid as JSON (a list for a STAC Catalog or ItemCollection), or describe the index in INDEX_DIR: scenes,
    dates, patches, model, vectors, tiling, FAISS type, grid and size on disk (read from its manifest only)."""
    from rscbir.index.describe import describe_index, describe_text
    from rscbir.index.layout import is_index

    if is_index(target):
        doc = describe_index(target)
        click.echo(json.dumps(doc, indent=2) if as_json else describe_text(doc))
        return
    opened, _ = scene_opts.open([target])  # a STAC Catalog or ItemCollection holds several scenes: a list of them
    click.echo(json.dumps(opened[0].describe() if len(opened) == 1 else [s.describe() for s in opened], indent=2))

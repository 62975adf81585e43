"""``rscbir info``: what rscbir sees in a scene (bands, date, grid)."""

from __future__ import annotations

import json

import click

from rscbir.cli import options


@click.command(epilog="\b\nExample:\n  rscbir info ../shared/data/oscd/paris/imgs_1")
@click.argument("scene", metavar="SCENE")
@options.scene_options
def info(scene, scene_opts):
    """Print SCENE's id, date, bands, CRS and grid as JSON."""
    (opened,), _ = scene_opts.open([scene])
    grid = opened.grid
    click.echo(
        json.dumps(
            {
                "scene_id": opened.scene_id,
                "date": opened.date.isoformat() if opened.date else None,
                "bands": opened.band_names,
                "dtype": str(opened.dtype),
                "nodata": opened.nodata,
                "crs": grid.crs.to_string(),
                "width": grid.width,
                "height": grid.height,
                "res": list(grid.res),
                "bounds": list(grid.bounds),
                "scaling": opened.scaling.mode.value,
                "files": opened.paths,
            },
            indent=2,
        )
    )

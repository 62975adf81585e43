"""``rscbir tile``: cut scenes into georeferenced patches and write the catalog."""

from __future__ import annotations

import click

from rscbir.cli import options


@click.command(
    epilog="""\b
Example:
  rscbir tile ../shared/data/naip_timeseries/m_4709963_se_14_1_20090818.tif \\
              ../shared/data/naip_timeseries/m_4709963_se_14_1_20200831.tif \\
              --align --patch-size 320m -o out/naip_tiles.parquet""",
)
@click.argument("scenes", nargs=-1, required=True, metavar="SCENE...")
@click.option("-o", "--output", required=True, callback=options.output_file, type=click.Path(dir_okay=False), help="Catalog file: .parquet (GeoParquet) or .geojson.")
@options.scene_options
@options.tiling_options
@click.option("--align", is_flag=True, help="Read every scene onto the first scene's grid, cropped to the common footprint.")
@click.pass_context
def tile(ctx, scenes, output, scene_opts, tiling, resampling, align):
    """Tile SCENE... (files, band-file folders or globs) into patches.

    Each patch row holds its id, scene, date, grid row/col, pixel window, affine
    transform, bounds in the scene CRS and a polygon in EPSG:4326.
    """
    from rasterio.enums import Resampling

    from rscbir.catalog import catalog_format, tile_scenes, write_catalog

    catalog_format(output)
    opened, _ = scene_opts.open(scenes)
    catalog = tile_scenes(opened, tiling, align=align, resampling=Resampling[resampling], progress=options.progress_enabled(ctx))
    write_catalog(catalog, output)
    counts = catalog.groupby("scene_id").size().to_dict()
    summary = ", ".join(f"{scene.scene_id}: {counts.get(scene.scene_id, 0)}" for scene in opened)
    click.echo(f"wrote {len(catalog)} patches to {output} ({summary})", err=True)

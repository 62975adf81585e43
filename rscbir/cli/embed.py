"""``rscbir embed``: tile scenes and store one CNN vector per patch."""

from __future__ import annotations

import sys

import click

from rscbir.cli import options


@click.command(
    epilog="""\b
Example:
  rscbir embed ../shared/data/naip_timeseries/m_4709963_se_14_1_20090818.tif \\
               --preset naip --patch-size 320m -o out/naip_2009_emb""",
)
@click.argument("scenes", nargs=-1, required=True, metavar="SCENE...")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Embedding store folder (created or replaced).")
@options.scene_options
@options.tiling_options
@options.model_options
@click.option("--align", is_flag=True, help="Read every scene onto the first scene's grid, cropped to the common footprint.")
@click.option("--dim", type=int, default=None, help="PCA to this many dimensions, fitted on these patches; stored with the model.")
@click.option("--whiten", type=float, default=0.0, show_default=True, help="Whitening power with --dim: 0 centred PCA, 0.5 full whitening.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--workers", type=int, default=None, help="Patch-reading worker processes (default: 0 on <= 2 cores, else 2).")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True)
@click.pass_context
def embed(ctx, scenes, output, preset, bands, band_names, scale, dates, patch_size, stride, edge, max_nodata, resampling,
          backbone, weights, all_bands, pooling, input_size, runtime, device, align, dim, whiten, batch_size, workers, dtype):  # fmt: skip
    """Embed every patch of SCENE... with a pretrained CNN (classifier removed).

    Writes OUTPUT/catalog.parquet (patches), vectors.npy (one L2-normalised
    vector per patch) and model.json (how to embed the same way again).
    """
    from rasterio.enums import Resampling

    from rscbir.embed import EmbedOptions, embed_scenes
    from rscbir.models.load import configure_threads

    configure_threads()
    opened, preset_obj = options.open_scenes(scenes, preset, bands, band_names, scale, dates)
    model, config, opened = options.model_for_scenes(opened, preset_obj, backbone, weights, all_bands, pooling, input_size)
    tiling = options.tiling_config(patch_size, stride, edge, max_nodata)
    run = EmbedOptions(
        batch_size=batch_size, workers=workers, runtime=runtime, device=device, dtype=dtype, dim=dim, whiten=whiten,
        resampling=Resampling[resampling], progress=not ctx.obj["quiet"] and sys.stderr.isatty(),
    )
    store = embed_scenes(opened, output, model, config, tiling, align, run)
    click.echo(
        f"wrote {len(store.vectors)} vectors of {store.meta['dim']} dims ({config.backbone}, bands "
        f"{','.join(config.input_bands)}) to {output}"
    )

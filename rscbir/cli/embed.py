"""``rscbir embed``: tile scenes and store one CNN vector per patch."""

from __future__ import annotations

import click

from rscbir.cli import options
from rscbir.modes import VectorDtype, choices


@click.command(
    epilog="""\b
Example:
  rscbir embed ../shared/data/naip_timeseries/m_4709963_se_14_1_20090818.tif \\
               --preset naip --patch-size 320m -o out/naip_2009_emb""",
)
@click.argument("scenes", nargs=-1, required=True, metavar="SCENE...")
@click.option("-o", "--output", required=True, callback=options.output_folder, type=click.Path(file_okay=False), help="Embedding store folder (created or replaced).")
@options.scene_options
@options.tiling_options
@options.model_options
@click.option("--align", is_flag=True, help="Read every scene onto the first scene's grid, cropped to the common footprint.")
@options.dim_option
@options.whiten_option
@options.batch_size_option
@options.workers_option
@click.option("--dtype", type=click.Choice(choices(VectorDtype)), default="float16", show_default=True, help="Storage type of the vectors.")
@click.pass_context
def embed(ctx, scenes, output, scene_opts, tiling, resampling, model_opts, align, dim, whiten, batch_size, workers, dtype):
    """Embed every patch of SCENE... with a pretrained CNN (classifier removed).

    Writes OUTPUT/catalog.parquet (patches), vectors.npy (one L2-normalised
    vector per patch) and model.json (how to embed the same way again).
    """
    from rasterio.enums import Resampling

    from rscbir.embed import EmbedOptions, embed_scenes
    from rscbir.models.onnx_cache import feature_model_for

    opened, preset = scene_opts.open(scenes)
    model, opened = feature_model_for(opened, preset, model_opts, use_cache=not workers)  # the cached graph: no torch
    run = EmbedOptions(batch_size=batch_size, workers=workers, runtime=model_opts.runtime, device=model_opts.device, dtype=dtype,
                       dim=dim or None, whiten=whiten, resampling=Resampling[resampling], progress=options.progress_enabled(ctx))  # fmt: skip
    store = embed_scenes(opened, output, model, tiling, align, run)
    click.echo(
        f"wrote {len(store.vectors)} vectors of {store.meta['dim']} dims ({model.config.backbone}, bands "
        f"{','.join(model.config.input_bands)}) to {output}",
        err=True,
    )

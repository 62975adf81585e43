"""``rscbir finetune-change``: a change model from labelled pairs (OSCD cities or A/ B/ label/ image pairs)."""

from __future__ import annotations

import time

import click

from rscbir.cli import options
from rscbir.defaults import CHANGE_POOLING


@click.command(
    name="finetune-change",
    epilog="""\b
Examples:
  rscbir finetune-change ../shared/data/oscd --pairs abudhabi,aguasclaras,bercy,bordeaux,hongkong -o out/change.pt
  rscbir change ../shared/data/oscd/rennes/imgs_1 ../shared/data/oscd/rennes/imgs_2 --preset sentinel2 \\
                --patch-size 32 --weights out/change.pt -o out/rennes_taught.geojson
  rscbir eval change ../shared/data/oscd --pairs mumbai,nantes,paris,pisa,rennes --weights out/change.pt --marks 1,3,10""",
)
@click.argument("folder", type=click.Path(exists=True, file_okay=False), metavar="DIR")
@click.option("-o", "--output", required=True, callback=options.output_file, type=click.Path(dir_okay=False), help="Change model checkpoint to write.")
@click.option("--pairs", callback=options.split_list, metavar="LIST",
              help="Train on these pairs only: OSCD city names or image names of A/ (comma-separated). Default: every labelled pair.")
@options.scene_options
@click.option("--patch-size", type=click.IntRange(8), default=None, metavar="PX",
              help="Side of the patches the CNN compares, in pixels (default: 32 for OSCD cities, 64 for image pairs).")
@options.model_options(pooling=CHANGE_POOLING)
@click.option("--hidden", type=click.IntRange(1), default=32, show_default=True, help="Hidden units of the change head.")
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True, help="Most passes (training stops early when the hold-out stops improving).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampling and training order.")
@click.pass_context
def finetune_change(ctx, folder, output, pairs, scene_opts, patch_size, model_opts, hidden, epochs, seed):
    """Train a change model on the labelled pairs of DIR: OSCD city folders (imgs_1/, imgs_2/, cm/; read with
    --preset sentinel2 unless told otherwise) or image pairs (A/, B/, label/). The pretrained backbone stays
    frozen; a small head learns which of its per-pixel evidence (feature differences of several stages, band
    residuals, label-free scores) is change, with the last rows of every pair held out for early stopping and
    the cut. `rscbir change --weights` and `rscbir eval change --weights` use the checkpoint; a scene read with
    other bands, scaling or patch size is refused."""
    from rscbir.change.head import HeadTraining
    from rscbir.change.training import finetune_change as train
    from rscbir.datasets.change_sets import change_set_defaults
    from rscbir.models.load import configure_threads
    from rscbir.tiling import TilingConfig

    configure_threads()
    scene_opts, default_patch = change_set_defaults(folder, scene_opts)
    tiling = TilingConfig(patch_size or default_patch)
    say = None if ctx.obj["quiet"] else (lambda line: click.echo(line, err=True))
    start = time.perf_counter()
    head = train(folder, pairs, scene_opts, tiling, model_opts, HeadTraining(hidden=hidden, epochs=epochs, seed=seed), progress=say)
    head.save(output)
    click.echo(f"change model trained on {len(head.meta['pairs'])} pairs in {time.perf_counter() - start:.0f} s: hold-out pixel F1 "
               f"{head.meta['holdout_f1']:.3f} at probability {head.cut:.2f}; written to {output}")  # fmt: skip

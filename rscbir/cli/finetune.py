"""``rscbir finetune``: train your own small FC head for retrieval."""

from __future__ import annotations

import click

from rscbir.cli import options


@click.command(
    epilog="""\b
Examples:
  rscbir finetune ../shared/data/rsscn7 --half first -o out/rsscn7_head.pt
  rscbir finetune ../shared/data/naip_timeseries/m_4709963_se_14_1_20090818.tif \\
                  --preset naip --self-supervised --patch-size 64 -o out/naip_ssl.pt""",
)
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@click.option("-o", "--output", required=True, callback=options.output_file, type=click.Path(dir_okay=False), help="Checkpoint file to write.")
@options.scene_options
@options.tiling_options
@options.model_options(pooling="avg")  # the fine-tuned head was measured on plain averages (RSSCN7 0.814)
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), help="Labelled polygons (GeoJSON, GPKG) over the SOURCE scenes.")
@click.option("--label-field", default="class", show_default=True, help="Polygon attribute holding the class.")
@click.option("--self-supervised", is_flag=True, help="No labels: Tile2Vec-style triplets of neighbouring patches.")
@click.option("--half", type=click.Choice(["all", "first", "second"]), default="all", show_default=True,
              help="For an image folder: train on this stratified half only (evaluate on the other).")  # fmt: skip
@click.option("--classes", callback=options.split_list, metavar="LIST",
              help="For an image folder: train on these classes only (comma-separated), e.g. to test on unseen ones.")
@click.option("--dim", type=int, default=128, show_default=True, help="Length of the learned embedding.")
@click.option("--unfreeze", type=int, default=0, show_default=True, help="Also train the last N trunk stages (slow on CPU).")
@click.option("--epochs", type=click.IntRange(1), default=60, show_default=True, help="Most passes over the training patches (training stops early when validation stops improving).")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="AdamW learning rate.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed of the split and the training order.")
@click.pass_context
def finetune(ctx, sources, output, scene_opts, tiling, resampling, model_opts, labels, label_field, self_supervised, half, classes,
             dim, unfreeze, epochs, lr, seed):  # fmt: skip
    """Fine-tune a head on SOURCE: a class-per-folder image set, scenes with
    --labels polygons, or scenes with --self-supervised.

    The checkpoint records backbone, head, band mapping and normalisation and
    is used with --weights by embed, eval and index.
    """
    from rscbir.datasets.scene_sets import LabelledImages, is_image_folder
    from rscbir.models import finetune as ft
    from rscbir.models.checkpoint import save_checkpoint
    from rscbir.models.load import configure_threads, model_for_images, model_for_scenes

    configure_threads()
    say = None if ctx.obj["quiet"] else (lambda line: click.echo(line, err=True))
    config = ft.TrainConfig(dim=dim, epochs=epochs, lr=lr, unfreeze=unfreeze, seed=seed)
    classes = []
    if len(sources) == 1 and not labels and not self_supervised and is_image_folder(sources[0]):
        images = LabelledImages.scan(sources[0]).select(classes=classes, half=half, seed=seed)
        model, history = ft.finetune_on_images(model_for_images(model_opts), images, config, say)
        mode, classes = "supervised-images", images.classes
    else:
        if not labels and not self_supervised:
            raise click.UsageError("SOURCE scenes need --labels POLYGONS or --self-supervised (or pass one image folder)")
        scenes, preset = scene_opts.open(sources)
        model, scenes = model_for_scenes(scenes, preset, model_opts)
        if self_supervised:
            anchors, neighbours = ft.neighbour_pairs(model, scenes, tiling)
            model, history = ft.train_triplets(model, anchors, neighbours, config, progress=say)
            mode = "self-supervised-triplets"
        else:
            tensors, targets, classes = ft.labelled_patches(scenes, labels, label_field, tiling)
            model, history = ft.train_supervised(model, tensors, targets, classes, config, say)
            mode = "supervised-polygons"
    save_checkpoint(model, output, mode, classes, history)
    best = min((h["val_loss"] for h in history), default=float("nan"))
    click.echo(f"wrote {output}: {mode}, {model.dim}-d head on {model.backbone.name}, {len(history)} epochs, best val loss {best:.3f}", err=True)

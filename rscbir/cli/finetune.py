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
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Checkpoint file to write.")
@options.scene_options
@options.tiling_options
@options.model_options
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), help="Labelled polygons (GeoJSON, GPKG) over the SOURCE scenes.")
@click.option("--label-field", default="class", show_default=True, help="Polygon attribute holding the class.")
@click.option("--self-supervised", is_flag=True, help="No labels: Tile2Vec-style triplets of neighbouring patches.")
@click.option("--half", type=click.Choice(["all", "first", "second"]), default="all", show_default=True,
              help="For an image folder: train on this stratified half only (evaluate on the other).")  # fmt: skip
@click.option("--dim", type=int, default=128, show_default=True, help="Length of the learned embedding.")
@click.option("--unfreeze", type=int, default=0, show_default=True, help="Also train the last N trunk stages (slow on CPU).")
@click.option("--epochs", type=int, default=60, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_context
def finetune(ctx, sources, output, preset, bands, band_names, scale, dates, patch_size, stride, edge, max_nodata, resampling,
             backbone, weights, all_bands, pooling, input_size, runtime, device, labels, label_field, self_supervised, half, dim, unfreeze,
             epochs, lr, seed):  # fmt: skip
    """Fine-tune a head on SOURCE: a class-per-folder image set, scenes with
    --labels polygons, or scenes with --self-supervised.

    The checkpoint records backbone, head, band mapping and normalisation and
    is used with --weights by embed, eval and index.
    """
    from pathlib import Path

    from rscbir.models import finetune as ft
    from rscbir.models.load import configure_threads, load_feature_model

    configure_threads()
    say = None if ctx.obj["quiet"] else (lambda line: click.echo(line, err=True))
    config = ft.TrainConfig(dim=dim, epochs=epochs, lr=lr, unfreeze=unfreeze, seed=seed)
    classes = []
    if len(sources) == 1 and Path(sources[0]).is_dir() and not labels and not self_supervised and _is_image_folder(Path(sources[0])):
        from rscbir.evaluate import LabelledImages

        images = LabelledImages.scan(sources[0])
        if half != "all":
            images = images.halves(seed)[0 if half == "first" else 1]
        model, _ = load_feature_model(["R", "G", "B"], backbone=backbone, weights=weights, input_size=input_size or None, pooling=pooling)
        model = ft.finetune_on_images(model, images, config, say)
        mode, classes = "supervised-images", images.classes
    else:
        if not labels and not self_supervised:
            raise click.UsageError("SOURCE scenes need --labels POLYGONS or --self-supervised (or pass one image folder)")
        scenes, preset_obj = options.open_scenes(sources, preset, bands, band_names, scale, dates)
        model, _, scenes = options.model_for_scenes(scenes, preset_obj, backbone, weights, all_bands, pooling, input_size)
        tiling = options.tiling_config(patch_size, stride, edge, max_nodata)
        if self_supervised:
            anchors, neighbours = ft.neighbour_pairs(model, scenes, tiling)
            model = ft.train_triplets(model, anchors, neighbours, config, progress=say)
            mode = "self-supervised-triplets"
        else:
            tensors, targets, classes = ft.labelled_patches(scenes, labels, label_field, tiling)
            model = ft.train_supervised(model, tensors, targets, classes, config, say)
            mode = "supervised-polygons"
    if unfreeze:
        mode += "-unfrozen"
    ft.save_checkpoint(model, output, mode, classes, config.history)
    best = min((h["val_loss"] for h in config.history), default=float("nan"))
    click.echo(f"wrote {output}: {mode}, {model.dim}-d head on {model.backbone.name}, {len(config.history)} epochs, best val loss {best:.3f}")


def _is_image_folder(path) -> bool:
    from rscbir.evaluate import IMAGE_SUFFIXES

    subdirs = [d for d in path.iterdir() if d.is_dir()]
    return bool(subdirs) and any(f.suffix.lower() in IMAGE_SUFFIXES for d in subdirs for f in d.iterdir())

"""``rscbir eval``: measure retrieval quality against labelled data."""

from __future__ import annotations

import json

import click

from rscbir.cli import options


@click.group(name="eval")
def eval_group():
    """Measure retrieval or change quality against labels."""


@eval_group.command(
    epilog="""\b
Example:
  rscbir eval retrieval ../shared/data/rsscn7 --json out/rsscn7_retrieval.json""",
)
@click.argument("folder", type=click.Path(exists=True, file_okay=False), metavar="DIR")
@options.model_options
@click.option("--dim", type=int, default=None, help="PCA to this many dimensions, fitted on the evaluated images.")
@click.option("--whiten", type=float, default=0.0, show_default=True, help="Whitening power: 0 centred PCA, 0.5 full whitening.")
@click.option("--half", type=click.Choice(["all", "first", "second"]), default="all", show_default=True,
              help="Evaluate on this stratified half only (the other half trained a head).")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the half split (as in finetune).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the figures here.")
def retrieval(folder, model_opts, dim, whiten, half, seed, json_path):
    """Every image of DIR (one sub-folder per class) queries the rest: mAP, P@5, P@10, P@50."""
    import time

    from rscbir.atomic import atomic_path
    from rscbir.embed import embed_images
    from rscbir.evaluate import retrieval_metrics
    from rscbir.images import LabelledImages
    from rscbir.models.load import configure_threads
    from rscbir.models.whitening import PCAWhitening

    configure_threads()
    images = LabelledImages.scan(folder)
    if half != "all":
        images = images.halves(seed)[0 if half == "first" else 1]
    model = model_opts.for_rgb_images()
    config = model.config
    start = time.perf_counter()
    vectors = embed_images(model, images.paths, runtime=model_opts.runtime)
    seconds = time.perf_counter() - start
    if dim:
        vectors = PCAWhitening.fit(vectors, dim, whiten).transform(vectors)
    result = {
        **retrieval_metrics(vectors, images.labels),
        "dataset": str(folder),
        "half": half,
        "backbone": config.backbone,
        "weights": config.checkpoint or config.weights,
        "pooling": config.pooling,
        "input_size": config.input_size,
        "dim": int(vectors.shape[1]),
        "whiten_power": whiten if dim else None,
        "images_per_second": len(images.paths) / seconds,
        "runtime": model_opts.runtime.value,
    }
    click.echo(
        f"{config.backbone} ({'checkpoint' if config.checkpoint else 'pretrained'}, {result['dim']}-d, {config.pooling}) on "
        f"{len(images.paths)} images: mAP {result['mAP']:.3f}  P@5 {result['P@5']:.3f}  P@10 {result['P@10']:.3f}  "
        f"P@50 {result['P@50']:.3f}"
    )
    if json_path:
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(result, indent=2))


@eval_group.command(
    name="change",
    epilog="""\b
Example:
  rscbir eval change ../shared/data/oscd --json out/oscd_change.json""",
)
@click.argument("folder", type=click.Path(exists=True, file_okay=False), metavar="OSCD_DIR")
@click.option("--city", "cities", multiple=True, help="Evaluate these cities only (default: all ten).")
@click.option("--patch-size", type=int, default=32, show_default=True, help="Patch side in 10 m pixels.")
@click.option("--threshold", default="otsu", show_default=True, help="Label-free threshold rule applied per city.")
@click.option("--all-bands", is_flag=True, help="CNN reads all 13 bands through an inflated first convolution (default: B04 B03 B02).")
@click.option("--dense", is_flag=True, help="Also score pixel by pixel (DCVA feature maps, CVA) and report pixel-level figures.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write every figure here.")
@click.option("-q", "--quiet", is_flag=True)
def change(folder, cities, patch_size, threshold, all_bands, dense, json_path, quiet):
    """Patch-level change detection on the OSCD cities against their labels (2 = change):
    precision, recall, F1 and ROC AUC per city and pooled, for every method and the CVA
    baseline, with a patch counted as changed above 0 %, 5 % and 25 % changed pixels."""
    from rscbir.atomic import atomic_path
    from rscbir.evaluate import OSCD_CITIES, evaluate_change_oscd
    from rscbir.models.load import configure_threads

    configure_threads()
    say = None if quiet else (lambda line: click.echo(line, err=True))
    result = evaluate_change_oscd(folder, cities or OSCD_CITIES, patch_size, threshold=threshold, all_bands=all_bands,
                                  progress=say, dense=dense)  # fmt: skip
    click.echo(f"pooled over {len(result['cities'])} cities ({patch_size} px patches, {threshold} threshold per city):")
    for cut in result["cuts"]:
        click.echo(f"  patch changed at > {cut:g} changed pixels:")
        for method in result["methods"]:
            m = result["pooled"][f"{method}@{cut:g}"]
            click.echo(f"    {method:<11} P {m['precision']:.3f}  R {m['recall']:.3f}  F1 {m['f1']:.3f}  AUC {m['auc']:.3f}")
    pixel = [k for k in result["pooled"] if k.startswith("pixel:")]
    if pixel:
        click.echo("  pixel level:")
        for key in pixel:
            m = result["pooled"][key]
            click.echo(f"    {key[6:]:<11} P {m['precision']:.3f}  R {m['recall']:.3f}  F1 {m['f1']:.3f}  AUC {m['auc']:.3f}")
    if json_path:
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(result, indent=1))

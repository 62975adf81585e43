"""``rscbir eval``: measure retrieval quality against labelled data."""

from __future__ import annotations

import json
from pathlib import Path

import click

from rscbir.cli import options


@click.group(name="eval")
def eval_group():
    """Measure retrieval or change quality against labels."""


@eval_group.command(
    epilog="""\b
Examples:
  rscbir eval retrieval ../shared/data/rsscn7 --feedback 20 --json out/rsscn7_retrieval.json
  rscbir eval retrieval ../shared/data/rsscn7 --half second --weights out/rsscn7_head.pt""",
)
@click.argument("folder", type=click.Path(exists=True, file_okay=False), metavar="DIR")
@options.model_options
@options.dim_option
@options.whiten_option
@click.option("--qe", type=click.IntRange(0), default=10, show_default=True, help="Query expansion with the K nearest images (0: off), as in `rscbir query`.")
@options.augment_option
@click.option("--feedback", "feedback_top", type=click.IntRange(0), default=0, metavar="N",
              help="Also simulate one relevance-feedback round: the top N hits marked right/wrong by their class.")
@click.option("--half", type=click.Choice(["all", "first", "second"]), default="all", show_default=True,
              help="Evaluate on this stratified half only (the other half trained a head).")  # fmt: skip
@click.option("--classes", callback=options.split_list, metavar="LIST", help="Evaluate on these classes only (comma-separated).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the half split (as in finetune).")
@options.json_file_option("Also write the figures here (JSON).")
@click.pass_context
def retrieval(ctx, folder, model_opts, dim, whiten, qe, augment, feedback_top, half, classes, seed, json_path):
    """Every image of DIR (one sub-folder per class) queries all the others, ranked the way
    `rscbir index build` + `rscbir query` rank (same model, corpus PCA, query expansion):
    mAP over the full ranking, P@5, P@10, P@50; with --feedback also after one feedback round."""
    from rscbir.export import write_text
    from rscbir.evaluate import evaluate_retrieval
    from rscbir.datasets.scene_sets import LabelledImages
    from rscbir.models.load import configure_threads
    from rscbir.rerank import QueryExpansion

    configure_threads()
    images = LabelledImages.scan(folder).select(classes=classes, half=half, seed=seed)
    say = None if ctx.obj["quiet"] else (lambda line: click.echo(line, err=True))
    result = evaluate_retrieval(images, model_opts, dim or None, whiten, QueryExpansion(qe), feedback_top, augment, progress=say)
    result.update({"dataset": str(folder), "half": half, "classes": classes or "all"})
    line = (f"{result['backbone']} ({'checkpoint' if result['checkpoint'] else 'pretrained'}, {result['dim']}-d, "
            f"{result['stages']} stages, {result['views']} views, augment {augment}, qe {qe}) on {result['queries']} images: mAP {result['mAP']:.3f}  "
            f"P@5 {result['P@5']:.3f}  P@10 {result['P@10']:.3f}  P@50 {result['P@50']:.3f}")  # fmt: skip
    if feedback_top:
        fb = result["feedback"]
        line += f"\nafter one feedback round on the top {feedback_top}: mAP {fb['mAP']:.3f}  P@10 {fb['P@10']:.3f}  P@50 {fb['P@50']:.3f}"
    click.echo(line)
    if json_path:
        write_text(json.dumps(result, indent=2), json_path)


@eval_group.command(
    name="change",
    epilog="""\b
Examples:
  rscbir eval change ../shared/data/oscd --json out/oscd_change.json
  rscbir eval change ../shared/data/oscd --pairs mumbai,nantes,paris,pisa,rennes --marks 1,3,10 --rounds 2
  rscbir eval change ../shared/data/levir_cd_samples --weights out/levir_change.pt --marks 3""",
)
@click.argument("folder", type=click.Path(exists=True, file_okay=False), metavar="DIR")
@click.option("--city", "cities", multiple=True, help="Evaluate these cities only (default: every city folder with labels).")
@click.option("--pairs", callback=options.split_list, metavar="LIST", help="These pairs only: OSCD city names or image names of A/ (comma-separated).")
@click.option("--patch-size", type=int, default=None, help="Patch side in pixels (default 32; 64 for A/ B/ label/ image pairs; a change model's own with --weights).")
@click.option("--threshold", default="otsu", show_default=True, help="Label-free threshold rule applied per city to patch scores.")
@click.option("--pixel-threshold", default="robust:3", show_default=True, help="Label-free rule for pixel scores (--dense), as `rscbir change`.")
@click.option("--all-bands", is_flag=True, help="CNN reads all 13 bands through an inflated first convolution (default: B04 B03 B02).")
@click.option("--dense", is_flag=True, help="Also score pixel by pixel (DCVA feature maps, CVA) and report pixel-level figures.")
@click.option("--weights", type=click.Path(dir_okay=False), help="A change model from `rscbir finetune-change`: measure its maps.")
@click.option("--marks", "clicks", callback=options.split_list, metavar="N[,N...]",
              help="Simulate N clicks per pair from its label (half in separate changed areas, half on unchanged ground; seeded) "
                   "and measure the map they teach, for each N given.")
@click.option("--rounds", type=click.IntRange(1), default=1, show_default=True, help="With --marks: rounds of N clicks, each next one where the map is most wrong.")
@click.option("--seeds", type=click.IntRange(1), default=3, show_default=True, help="With --marks: click draws per pair, pooled.")
@options.json_file_option()
@click.option("-q", "--quiet", is_flag=True, help="No per-city progress lines on stderr.")
def change(folder, cities, pairs, patch_size, threshold, pixel_threshold, all_bands, dense, weights, clicks, rounds, seeds, json_path, quiet):
    """Change detection against labels. DIR holds OSCD-style city folders (imgs_1/, imgs_2/, cm/ with
    2 = change): precision, recall, F1 and ROC AUC per city and pooled, for every method and the CVA
    baseline, a patch counted as changed above 0 %, 5 % and 25 % changed pixels (--dense: pixel level too).
    Or DIR holds image pairs A/, B/, label/ (LEVIR-CD, DSIFN): pixel-level figures of fusion and CVA.
    With --weights and/or --marks: pixel F1 of the maps a change model and simulated clicks teach, beside the
    label-free default and CVA on the same pairs."""
    from rscbir.export import write_text
    from rscbir.datasets.pairs import is_pair_layout
    from rscbir.models.load import configure_threads

    configure_threads()
    say = None if quiet else (lambda line: click.echo(line, err=True))
    chosen = list(pairs or ()) + list(cities)
    if weights or clicks:
        result = _taught(folder, chosen, patch_size, weights, clicks, rounds, seeds, say)
    elif is_pair_layout(folder):
        result = _pairs(folder, pixel_threshold, say)
    else:
        result = _oscd(folder, chosen, patch_size or 32, threshold, all_bands, dense, pixel_threshold, say)
    if json_path:
        write_text(json.dumps(result, indent=1), json_path)


def _taught(folder, chosen, patch_size, weights, clicks, rounds, seeds, say) -> dict:
    from rscbir.change.head import read_change_head
    from rscbir.datasets.change_sets import change_set_defaults
    from rscbir.errors import ModelMismatchError
    from rscbir.evaluate import evaluate_taught_change
    from rscbir.tiling import TilingConfig

    if weights and not Path(weights).is_file():
        raise click.BadParameter(f"{weights}: no such file", param_hint="--weights")
    head = read_change_head(weights) if weights else None
    if weights and head is None:
        raise ModelMismatchError(f"{weights}: not a change model; train one with `rscbir finetune-change`")
    try:
        counts = tuple(int(n) for n in clicks or ())
    except ValueError:
        raise click.BadParameter(f"{','.join(clicks)}: give click counts as whole numbers, e.g. 1,3,10", param_hint="--marks") from None
    if any(n < 1 for n in counts):
        raise click.BadParameter("click counts must be 1 or more", param_hint="--marks")
    scene_options, default_patch = change_set_defaults(folder)
    size = patch_size or (head.meta["patch_size"] if head else default_patch)
    result = evaluate_taught_change(folder, chosen or None, scene_options, TilingConfig(size), head, counts, rounds, seeds, progress=say)
    click.echo(f"pixel level over {len(result['pairs'])} pairs ({size} px patches; clicks: {seeds} draws per pair, pooled):")
    for key, m in result["pooled"].items():
        click.echo(f"  {key:<24} P {m['precision']:.3f}  R {m['recall']:.3f}  F1 {m['f1']:.3f}")
    return result


def _pairs(folder, pixel_threshold, say) -> dict:
    from rscbir.evaluate import evaluate_change_pairs

    result = evaluate_change_pairs(folder, pixel_threshold=pixel_threshold, progress=say)
    click.echo(f"pixel level over {len(result['images'])} image pairs ({result['pixel_threshold']}, 64 px patches):")
    for method, m in result["pooled"].items():
        click.echo(f"  {method:<8} P {m['precision']:.3f}  R {m['recall']:.3f}  F1 {m['f1']:.3f}  AUC {m['auc']:.3f}  "
                   f"(mean of images F1 {m['mean_of_images_f1']:.3f})")  # fmt: skip
    for name, note in result["notes"].items():
        click.echo(f"  note: {name}: {note}", err=True)
    return result


def _oscd(folder, cities, patch_size, threshold, all_bands, dense, pixel_threshold, say) -> dict:
    from rscbir.evaluate import evaluate_change_oscd, figure_key

    result = evaluate_change_oscd(folder, cities or None, patch_size, threshold=threshold, all_bands=all_bands,
                                  progress=say, dense=dense, pixel_threshold=pixel_threshold)  # fmt: skip
    click.echo(f"pooled over {len(result['cities'])} cities ({patch_size} px patches, {threshold} threshold per city):")
    for cut in result["cuts"]:
        click.echo(f"  patch changed at > {cut:g} changed pixels:")
        for method in result["methods"]:
            m = result["pooled"][figure_key(method, cut)]
            click.echo(f"    {method:<11} P {m['precision']:.3f}  R {m['recall']:.3f}  F1 {m['f1']:.3f}  AUC {m['auc']:.3f}")
    pixel = [method for method in result["methods"] if figure_key(method) in result["pooled"]]
    if pixel:
        click.echo(f"  pixel level ({result['pixel_threshold']} per city, smoothing {result['smooth_px']} px, areas >= {result['min_pixels']} px):")
        for method in pixel:
            m, c = result["pooled"][figure_key(method)], result["mean_of_cities"][figure_key(method)]
            click.echo(f"    {method:<11} P {m['precision']:.3f}  R {m['recall']:.3f}  F1 {m['f1']:.3f}  AUC {m['auc']:.3f}  "
                       f"(mean of cities: F1 {c['f1']:.3f}  AUC {c['auc']:.3f})")
    return result


@eval_group.command(
    name="across-dates",
    epilog="\b\nExample:\n  rscbir eval across-dates out/naip_index -k 10 --probes 200",
)
@click.argument("index_dir", type=click.Path(file_okay=False), metavar="INDEX_DIR")
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True, help="Results per query.")
@click.option("--probes", type=click.IntRange(1), default=200, show_default=True, help="Query patches drawn at random (seeded).")
@click.option("--every-date", is_flag=True, help="Count every date of a place (as `rscbir query --every-date`), not one hit per place.")
@options.json_file_option()
def across_dates(index_dir, k, probes, every_date, json_path):
    """Ground, not acquisition, in an index of several dates: the share of each query's top k that comes from
    other dates than the query's own (1 - 1/dates when a search ignores how a date was acquired)."""
    from rscbir.evaluate import evaluate_other_dates
    from rscbir.export import write_text
    from rscbir.index import Index

    result = evaluate_other_dates(Index.open(index_dir), k, probes, places=not every_date)
    click.echo(f"{result['other_dates_share']:.3f} of the top {k} come from other dates ({result['probes']} queries, "
               f"{len(result['dates'])} dates)")  # fmt: skip
    for date, share in result["by_query_date"].items():
        click.echo(f"  queries of {date}: {share:.3f}" if share is not None else f"  queries of {date}: no probe")
    if json_path:
        write_text(json.dumps(result, indent=1), json_path)


@eval_group.command(
    name="dates",
    epilog="""\b
Examples:
  rscbir eval dates ../shared/data/oscd --json out/oscd_same_place.json
  rscbir eval dates ../shared/data/oscd --pooling avg --no-centre-scenes   # the earlier default""",
)
@click.argument("folder", type=click.Path(exists=True, file_okay=False), metavar="OSCD_DIR")
@click.option("--city", "cities", multiple=True, help="These cities only (default: every city folder with labels).")
@options.model_options
@options.dim_option
@options.whiten_option
@click.option("--centre-scenes/--no-centre-scenes", default=True, show_default=True,
              help="Dates centred and within-place whitening, as `rscbir index build` does by default.")
@click.option("--patch-size", type=click.IntRange(1), default=32, show_default=True, help="Patch side in 10 m pixels.")
@options.json_file_option()
@click.pass_context
def dates(ctx, folder, cities, model_opts, dim, whiten, centre_scenes, patch_size, json_path):
    """Ground, not acquisition: index both dates of every OSCD city on one grid and report how often an
    unchanged place's patch ranks first among all patches of the other date."""
    from rscbir.export import write_text
    from rscbir.embed import EmbedOptions
    from rscbir.evaluate import evaluate_same_place
    from rscbir.models.load import configure_threads
    from rscbir.tiling import TilingConfig

    configure_threads()
    say = None if ctx.obj["quiet"] else (lambda line: click.echo(line, err=True))
    run = EmbedOptions(dim=dim or None, whiten=whiten, runtime=model_opts.runtime, device=model_opts.device)
    result = evaluate_same_place(folder, cities or None, model_opts, TilingConfig(patch_size), run, centre_scenes, say)
    click.echo(f"same place ranked first across dates for {result['first']:.3f} of {result['places']} unchanged places "
               f"(mean of cities {result['mean_of_cities']:.3f}, median rank {result['median_rank']:g})")  # fmt: skip
    if json_path:
        write_text(json.dumps(result, indent=2), json_path)

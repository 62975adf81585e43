"""``rscbir change`` and ``rscbir query-change``: what changed, and where else did the same change happen."""

from __future__ import annotations

import contextlib
import json

import click
from click.core import ParameterSource

from rscbir.cli import options
from rscbir.defaults import CHANGE_POOLING
from rscbir.modes import ChangeMethod, choices


class TwoModeCommand(click.Command):
    """A command whose usage line names each of its modes."""

    def __init__(self, *args, usages: tuple[str, ...] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.usages = usages

    def format_usage(self, ctx, formatter):
        prog = ctx.command_path
        for i, usage in enumerate(self.usages):
            formatter.write_usage(prog, usage, "Usage: " if i == 0 else "   or: ")


@click.command(
    cls=TwoModeCommand,
    usages=("[OPTIONS] BEFORE AFTER -o OUTPUT", "[OPTIONS] --index INDEX_DIR [--dates D1 D2] -o OUTPUT"),
    epilog="""\b
Examples:
  rscbir change ../shared/data/oscd/rennes/imgs_1 ../shared/data/oscd/rennes/imgs_2 --preset sentinel2 \\
                --patch-size 32 -o out/rennes_change.geojson --scores out/rennes_scores.tif --preview out/rennes.png
  rscbir change --index out/naip_index --dates 20090818 20200831 -o out/naip_change.geojson
  rscbir change --index out/naip_all -o out/naip_when.geojson      # every date: when did each place change?""",
)
@click.argument("scenes", nargs=-1, metavar="[BEFORE AFTER]")
@click.option("-o", "--output", required=True, callback=options.output_file, type=click.Path(dir_okay=False, allow_dash=True), help="GeoJSON of changed areas (EPSG:4326).")
@click.option("--index", "index_dir", type=click.Path(file_okay=False), help="Take both dates from an aligned index instead of scenes, patch by patch: --method cosine compares the stored embeddings; other methods read the rasters again.")
@click.option("--dates", "index_dates", nargs=2, metavar="D1 D2",
              help="With --index: the two dates to compare. Without: every date of the index, and when each place changed.")
@options.scene_options
@options.tiling_options
@options.model_options(pooling=CHANGE_POOLING)
@click.option("--method", type=click.Choice(choices(ChangeMethod)), default="fusion", show_default=True, help="Change score (see rscbir.change).")
@click.option("--threshold", default=None,
              help="robust:3 (median + 3 robust SD; default at pixel level), otsu (default at patch level), percentile:95, sigma:3 or a number.")
@click.option("--level", type=click.Choice(["pixel", "patch"]), default="pixel", show_default=True,
              help="pixel: score every pixel (CNN feature maps and CVA) and trace changed areas from the pixel mask; "
                   "patch: one score per patch, changed patches dissolved (the only level with --index).")
@click.option("--min-pixels", type=click.IntRange(1), default=10, show_default=True, help="Pixel level: drop changed areas smaller than this.")
@click.option("--smooth", type=click.FloatRange(0), default=1.0, show_default=True, help="Pixel level: Gaussian sigma (px) on the scores before the cut.")
@click.option("--all-patches", is_flag=True, help="Write every patch with its score instead of changed areas (patch level).")
@click.option("--scores", "scores_path", callback=options.output_file, type=click.Path(dir_okay=False), help="Float32 Cloud-Optimized GeoTIFF (tiled, overviews) of the score map on the common grid (pixels or patches).")
@click.option("--preview", callback=options.output_file, type=click.Path(dir_okay=False), help="PNG: before | after | score heat map, changes outlined.")
@click.option("--html", callback=options.output_file, type=click.Path(dir_okay=False), help="HTML map of the changed areas: one self-contained file that opens offline.")
@click.option("--places-sheet", "places_sheet", callback=options.output_file, type=click.Path(dir_okay=False),
              help="With --index and --dates: PNG of the 18 strongest changed places, each a before | after pair.")
@click.option("--scheduler", default=None, metavar="local|ADDRESS",
              help="Pixel level: score the patch rows on Dask (`local` starts a LocalCluster, one worker per core; "
                   "tcp://host:8786 uses a running one, whose workers must see TMPDIR). Same result as one process.")
@click.option("--marks", "marks_path", type=click.Path(exists=True, dir_okay=False),
              help="Vector file of marks (points or polygons, any CRS, a 'changed' property 1/0): the map is corrected "
                   "around each mark toward its answer. Add marks and run again; the pair's CNN evidence is cached.")
def change(scenes, output, index_dir, index_dates, scene_opts, tiling, resampling, model_opts, method, threshold, level, min_pixels,
           smooth, all_patches, scores_path, preview, html, places_sheet, scheduler, marks_path):  # fmt: skip
    """Compare BEFORE and AFTER (files or band-file folders), or two dates of an aligned
    index (--index DIR --dates D1 D2), on one grid, and write the changed areas as GeoJSON,
    each with its score (p75 of its pixels), max and mean score, area in m² and both dates.
    With --index and no --dates: every date of the index, and when each place changed
    (changed_between, an ISO 8601 interval).

    \b
    Teach it what counts as change:
      --marks FILE        points/polygons with changed=1 or 0 correct the map around them
      --weights change.pt a change model from `rscbir finetune-change` replaces the label-free score"""
    from rscbir import change as ch
    from rscbir.thresholds import Threshold

    rule = Threshold.parse(threshold) if threshold is not None else None
    if index_dir and not index_dates:  # every date of the index: when did each place change?
        _refuse_scene_options_with_index(click.get_current_context(), scenes)
        return _series(index_dir, method, threshold, all_patches, output, scores_path, preview or places_sheet, html, marks_path)
    # torch is set up only where a CNN surely runs: cosine from an index compares stored vectors, a new round of
    # marks reads the pair's cached evidence (its first round builds the model inside scene_evidence), and a pixel
    # map made in strips sets torch up itself, only when no cached pair graph spares it
    strips = (not index_dir and level == "pixel" and not all_patches and ChangeMethod(method) in ch.PIXEL_METHODS
              and not (marks_path or model_opts.weights))  # fmt: skip
    if not (index_dir and method == ChangeMethod.COSINE.value) and not (marks_path and not model_opts.weights) and not strips:
        from rscbir.models.load import configure_threads

        configure_threads()
    if places_sheet and not index_dir:
        raise click.UsageError("--places-sheet shows places of an index: give --index IDX --dates D1 D2")
    if index_dir:
        _refuse_scene_options_with_index(click.get_current_context(), scenes)
        from rscbir.index import Index

        if marks_path:
            found = _taught_in_index(Index.open(index_dir), options.ordered_dates(index_dates), method, rule, marks_path, all_patches)
            return _write_change(found, found.summary["method"], output, scores_path, preview, html, False)
        index = Index.open(index_dir)
        found = ch.detect_in_index(index, options.ordered_dates(index_dates), method, rule, all_patches)
        if places_sheet:
            return _write_change(found, method, output, scores_path, preview, html, all_patches, (index, places_sheet))
    else:
        if len(scenes) != 2:
            raise click.UsageError("give BEFORE and AFTER scenes, or --index with --dates")
        (before, after), preset = scene_opts.open(scenes)
        if before.date and after.date and before.date > after.date:
            click.echo(f"warning: BEFORE ({before.date}) is later than AFTER ({after.date}); scores are the same, "
                       "`date_before`/`date_after` follow the order given", err=True)  # fmt: skip
        named = bool(scene_opts.preset or scene_opts.bands)
        head = _change_head(model_opts.weights)
        if marks_path or head is not None:
            if level == "patch" or all_patches or threshold is not None or scheduler:
                raise click.UsageError("--marks and a change model make pixel-level maps with their own cut, in one process: "
                                       "drop --level patch, --all-patches, --threshold and --scheduler")  # fmt: skip
            found = _taught(before, after, tiling, model_opts, preset, named, head, marks_path, ch.PixelRegularisation(smooth, min_pixels))
            return _write_change(found, found.summary["method"], output, scores_path, preview, html, False)
        regularisation = ch.PixelRegularisation(smooth, min_pixels)
        streamed = level == "pixel" and not all_patches and ChangeMethod(method) in ch.PIXEL_METHODS
        if scheduler and not streamed:
            raise click.UsageError("--scheduler scores pixel-level maps (--level pixel with fusion, dense or cva)")
        if streamed:  # in strips: flat memory at any size
            from rscbir.atomic import all_or_nothing

            with contextlib.ExitStack() as stack:
                client = None
                if scheduler:  # torch comes with the Dask runner; without a scheduler it stays unloaded
                    from rscbir.scale import dask_client

                    client = stack.enter_context(dask_client(scheduler))
                with all_or_nothing():
                    found = ch.stream_change(before, after, method, threshold=rule, tiling=tiling, model_options=model_opts, preset=preset,
                                             named_bands=named, rule=regularisation, scores_path=scores_path, client=client)  # fmt: skip
                    return _write_change(found, method, output, None, preview, html, all_patches)
        scores = ch.score_scenes(before, after, tiling, method, model_opts, preset, named, pixel_maps=level == "pixel")
        found = ch.change_map(scores, method, rule, regularisation, all_patches)
    _write_change(found, method, output, scores_path, preview, html, all_patches)


def _change_head(weights):
    """The change model when ``--weights`` names a `finetune-change` checkpoint, else None (backbone weights)."""
    if not weights:
        return None
    from rscbir.change.head import read_change_head

    return read_change_head(weights)


def _taught(before, after, tiling, model_opts, preset, named, head, marks_path, regularisation):
    """A change map taught by a change model and/or marks (pixel level, evidence cached between rounds)."""
    from rscbir.change.taught import teach

    found = teach(before, after, marks_path, head, preset=preset, named_bands=named, tiling=tiling, model_options=model_opts,
                  regularisation=regularisation)  # fmt: skip
    if marks_path:
        click.echo(f"{found.summary['marked_pixels']} marked pixels ({found.summary['taught_by']})", err=True)
    return found


def _series(index_dir, method, threshold, all_patches, output, scores_path, preview, html, marks_path) -> None:
    """Change through every date of an index: per place, the interval it changed most in (stored vectors only)."""
    from rscbir import export
    from rscbir.atomic import all_or_nothing
    from rscbir.change.series import ACQUISITION_WARNING, SERIES_CUT, series_change
    from rscbir.index import Index

    ctx = click.get_current_context()
    explicit = {n for n in ("method", "threshold") if ctx.get_parameter_source(n) is ParameterSource.COMMANDLINE}
    if ("method" in explicit and method != ChangeMethod.COSINE.value) or scores_path or preview or marks_path:
        raise click.UsageError("a time series (--index without --dates) compares the stored vectors date to date: "
                               "use --method cosine and no --scores, --preview or --marks, or give --dates D1 D2")  # fmt: skip
    try:
        cut = float(threshold) if threshold is not None else SERIES_CUT
    except ValueError:
        raise click.BadParameter(f"{threshold!r}: a time series cuts at a number of robust SD (default {SERIES_CUT:g})",
                                 param_hint="--threshold") from None
    found = series_change(Index.open(index_dir), cut=cut)
    places = found.places if all_patches else found.places[found.places["changed_between"].notna()]
    with all_or_nothing():
        export.write_text(json.dumps(export.change_geojson(places, found.summary)), output)
        if html:
            export.change_map(places, html)
    s = found.summary
    worst = max(s["median_step_distance"].values())
    if worst > ACQUISITION_WARNING:
        click.echo(f"note: one place's vectors differ by a median cosine distance of up to {worst:.2f} between consecutive dates: "
                   "this index sees how each date was acquired as much as the ground, so real change may not stand out", err=True)  # fmt: skip
    busiest = max(s["changed_by_interval"].items(), key=lambda item: item[1]) if s["changed_by_interval"] else ("-", 0)
    click.echo(f"{s['changed_places']} of {s['places']} places changed over {len(found.dates)} dates ({s['threshold_rule']}); "
               f"most in {busiest[0]} ({busiest[1]}); {len(places)} places written to {output}", err=True)  # fmt: skip


def _taught_in_index(index, dates, method, rule, marks_path, all_patches):
    """Two dates of an index, patch by patch, taught by marks (a bad marks file fails before any score is computed)."""
    from rscbir.change.marks import read_patch_marks
    from rscbir.change.scores import scores_from_index
    from rscbir.change.taught import taught_patch_map

    if all_patches:
        raise click.UsageError("--marks writes the taught changed areas: drop --all-patches")
    scores = scores_from_index(index, dates, method)
    labels = read_patch_marks(marks_path, scores.patches)
    click.echo(f"marks on {int((labels >= 0).sum())} patches: {int((labels == 1).sum())} changed, {int((labels == 0).sum())} not changed",
               err=True)  # fmt: skip
    return taught_patch_map(scores, method, labels, rule)


def _refuse_scene_options_with_index(ctx, scenes) -> None:
    """With --index the scenes, bands, tiling and model are the index's own: options that would change them are an error."""
    if scenes:
        raise click.UsageError(f"with --index, give the two dates after --dates and no scenes (extra value: {' '.join(scenes)})")
    ignored = options.given_options(ctx, SCENE_ONLY)
    if ignored:
        raise click.UsageError(f"{', '.join(ignored)} cannot be used with --index: the index scores patches with its own bands, "
                               "tiling and model; compare the scenes themselves (rscbir change BEFORE AFTER) for these")


def _write_change(found, method, output, scores_path, preview, html, all_patches, sheet=None) -> None:
    """Every output asked for; ``sheet`` = (index, path) of a contact sheet of the changed places."""
    from rscbir import export
    from rscbir.atomic import all_or_nothing

    summary = found.summary
    with all_or_nothing():  # GeoJSON, score raster, preview and map appear together or not at all
        export.write_text(json.dumps(export.change_geojson(found.areas, summary)), output)
        if scores_path:
            export.score_raster(found.scores, method, scores_path)
        if preview:
            export.change_preview(found.scores, method, summary["threshold"], preview, mask=found.mask, pixel_view=found.view)
        if html:
            export.change_map(found.areas, html)
        if sheet:
            export.changed_places_sheet(sheet[0], found.scores, method, summary["threshold"], sheet[1])
    if output != "-":
        unit = "pixels" if summary["level"] == "pixel" else "patches"
        click.echo(f"{summary['changed_' + unit]} of {summary[unit]} {unit} changed ({method} > {summary['threshold']:.4g}); "
                   f"{len(found.areas)} {'patches' if all_patches else 'areas'} written to {output}", err=True)  # fmt: skip


# options that only mean something when the scenes are read (not with --index)
SCENE_ONLY = ("preset", "bands", "band_names", "scale", "dates", "patch_size", "stride", "edge", "max_nodata", "resampling",
              "backbone", "weights", "all_bands", "pooling", "input_size", "runtime", "device", "stages", "views", "level",
              "min_pixels", "smooth", "scheduler")  # fmt: skip


@click.command(
    name="query-change",
    epilog="""\b
Example:
  rscbir query-change out/naip_index --lonlat -99.1329 47.0294 --dates 20090818 20200831 -k 10""",
)
@click.argument("index_dir", type=click.Path(file_okay=False), metavar="INDEX_DIR")
@click.option("--lonlat", type=float, nargs=2, required=True, metavar="LON LAT", callback=options.check_lonlat,
              help="The example change is at this point.")
@click.option("--dates", nargs=2, required=True, metavar="D1 D2", help="Before and after dates.")
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True, help="Number of results.")
@click.option("--all-pairs", is_flag=True, help="Rank every co-located pair, not only those whose change passes --threshold.")
@click.option("--threshold", default="otsu", show_default=True, help="Change magnitude a candidate must exceed.")
@click.option("--exclude-radius", type=float, default=None, metavar="METRES", help="Drop results within this distance of the example.")
@click.option("-o", "--output", default="-", callback=options.output_file, type=click.Path(dir_okay=False, allow_dash=True), help="Results file (default stdout).")
@click.option("--format", "fmt", type=click.Choice(["geojson", "csv"]), default="geojson", show_default=True, help="Results format.")
@click.option("--preview", callback=options.output_file, type=click.Path(dir_okay=False),
              help="PNG contact sheet: the example patch and each hit, before | after.")
@click.option("--html", callback=options.output_file, type=click.Path(dir_okay=False), help="HTML map of the hits: one self-contained file that opens offline.")
def query_change(index_dir, lonlat, dates, k, all_pairs, threshold, exclude_radius, output, fmt, preview, html):
    """Places of INDEX_DIR whose change between D1 and D2 is most like the change at LON LAT
    (cosine similarity of normalised embedding differences)."""
    from rscbir import export
    from rscbir.atomic import all_or_nothing
    from rscbir.index import Index
    from rscbir.query import query_change as run
    from rscbir.thresholds import Threshold

    opened = Index.open(index_dir)
    result = run(opened, lonlat[0], lonlat[1], options.ordered_dates(dates), k, all_pairs, Threshold.parse(threshold), exclude_radius)
    text = json.dumps(export.to_geojson(result)) if fmt == "geojson" else export.to_csv(result)
    with all_or_nothing():
        export.write_text(text, output)
        if preview:
            export.change_contact_sheet(opened, result, preview)
        if html:
            export.results_map(result, html)

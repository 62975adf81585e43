"""``rscbir change`` and ``rscbir query-change``: what changed, and where else did the same change happen."""

from __future__ import annotations

import json

import click

from rscbir.cli import options

METHODS = ["fusion", "dense", "multilayer", "cosine", "cva"]


@click.command(
    epilog="""\b
Examples:
  rscbir change ../shared/data/oscd/rennes/imgs_1 ../shared/data/oscd/rennes/imgs_2 --preset sentinel2 \\
                --patch-size 32 -o out/rennes_change.geojson --scores out/rennes_scores.tif --preview out/rennes.png
  rscbir change --index out/naip_index --dates 20090818 20200831 -o out/naip_change.geojson""",
)
@click.argument("scenes", nargs=-1, metavar="BEFORE AFTER")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, allow_dash=True), help="GeoJSON of changed areas (EPSG:4326).")
@click.option("--index", "index_dir", type=click.Path(file_okay=False), help="Take both dates from an aligned index instead of scenes.")
@click.option("--dates", "index_dates", nargs=2, metavar="D1 D2", help="With --index: the two dates to compare.")
@options.scene_options
@options.tiling_options
@options.model_options
@click.option("--method", type=click.Choice(METHODS), default="fusion", show_default=True, help="Change score (see rscbir.change).")
@click.option("--threshold", default="otsu", show_default=True, help="otsu, percentile:95, sigma:3 or a number.")
@click.option("--all-patches", is_flag=True, help="Write every patch with its score instead of dissolved changed areas.")
@click.option("--scores", "scores_path", type=click.Path(dir_okay=False), help="Float32 GeoTIFF of the score map on the common grid.")
@click.option("--dense", is_flag=True, help="Also score every pixel from the CNN feature maps (DCVA) and CVA; --scores then has the grid's pixels.")
@click.option("--preview", type=click.Path(dir_okay=False), help="PNG: before | after | score heat map, changes outlined.")
@click.option("--html", type=click.Path(dir_okay=False), help="Leaflet map of the changed areas.")
def change(scenes, output, index_dir, index_dates, preset, bands, band_names, scale, dates, patch_size, stride, edge,
           max_nodata, resampling, backbone, weights, all_bands, pooling, input_size, runtime, device, method, threshold,
           all_patches, scores_path, dense, preview, html):  # fmt: skip
    """Compare BEFORE and AFTER (files or band-file folders) patch by patch on one grid and
    write the changed areas as GeoJSON, each with max and mean score, area in m², patch
    count and both dates."""
    from rscbir import change as ch
    from rscbir.export import write_text
    from rscbir.models.load import configure_threads

    configure_threads()
    if index_dir:
        if scenes or not index_dates:
            raise click.UsageError("with --index give --dates D1 D2 and no scenes")
        from rscbir.index import Index

        scores = ch.scores_from_index(Index.open(index_dir), index_dates, method)
    else:
        if len(scenes) != 2:
            raise click.UsageError("give BEFORE and AFTER scenes, or --index with --dates")
        opened, preset_obj = options.open_scenes(scenes, preset, bands, band_names, scale, dates)
        before_all = opened[0]
        after_all = _same_bands(opened[1], before_all, named=bool(preset or bands))
        tiling = options.tiling_config(patch_size, stride, edge, max_nodata)
        model = None
        before, after = before_all, after_all
        if method != "cva":
            model, _, (before, after) = options.model_for_scenes([before_all, after_all], preset_obj, backbone, weights,
                                                                 all_bands, pooling, input_size)  # fmt: skip
        scores = ch.score_change(before, after, model, tiling, spectral=(before_all, after_all), pixel_maps=dense)
    values = scores.score(method)
    cut = ch.threshold_value(values, threshold)
    if all_patches:
        frame = scores.patches[["patch_id", "row", "col", "date_before", "date_after", "geometry", method]].rename(columns={method: "score"})
        frame["changed"] = frame["score"] > cut
    else:
        frame = ch.changed_areas(scores, method, cut)
    doc = json.loads(frame.to_json(drop_id=True))
    doc["change"] = {"method": method, "threshold_rule": str(threshold), "threshold": cut, "patches": int(len(values)),
                     "changed_patches": int((values > cut).sum())}  # fmt: skip
    write_text(json.dumps(doc), output)
    if scores_path:
        ch.score_raster(scores, method, scores_path)
    if preview:
        ch.preview(scores, method, cut, preview)
    if html:
        from rscbir.export import leaflet_map
        from rscbir.query import QueryResult

        hits = frame.assign(rank=range(1, len(frame) + 1), score=frame.get("max_score", frame.get("score")),
                            patch_id="", scene_id="", date=f"{scores.patches['date_before'].iloc[0]}/{scores.patches['date_after'].iloc[0]}",
                            row=0, col=0)  # fmt: skip
        leaflet_map(QueryResult(hits), html)
    if output != "-":
        click.echo(f"{int((values > cut).sum())} of {len(values)} patches changed ({method} > {cut:.4g}); "
                   f"{len(frame)} {'patches' if all_patches else 'areas'} written to {output}", err=True)  # fmt: skip


def _same_bands(after, before, named: bool):
    """``after`` read with ``before``'s bands; different band counts need names from a preset or --bands."""
    from rscbir.errors import BandError

    if after.count != before.count and (not named or set(before.band_names) - set(after.band_names)):
        raise BandError(
            f"{after.location}: has {after.count} bands ({', '.join(after.band_names)}), {before.location} has "
            f"{before.count} ({', '.join(before.band_names)}); pass --preset or --bands so both dates read the same bands"
        )
    return after.select(before.band_names)


@click.command(
    name="query-change",
    epilog="""\b
Example:
  rscbir query-change out/naip_index --lonlat -99.1329 47.0294 --dates 20090818 20200831 -k 10""",
)
@click.argument("index_dir", type=click.Path(file_okay=False), metavar="INDEX_DIR")
@click.option("--lonlat", type=float, nargs=2, required=True, metavar="LON LAT", help="The example change is at this point.")
@click.option("--dates", nargs=2, required=True, metavar="D1 D2", help="Before and after dates.")
@click.option("-k", "k", type=int, default=10, show_default=True)
@click.option("--all-pairs", is_flag=True, help="Rank every co-located pair, not only those whose change passes --threshold.")
@click.option("--threshold", default="otsu", show_default=True, help="Change magnitude a candidate must exceed.")
@click.option("--exclude-radius", type=float, default=None, metavar="METRES")
@click.option("-o", "--output", default="-", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--format", "fmt", type=click.Choice(["geojson", "csv"]), default="geojson", show_default=True)
@click.option("--html", type=click.Path(dir_okay=False), help="Leaflet map of the hits.")
def query_change(index_dir, lonlat, dates, k, all_pairs, threshold, exclude_radius, output, fmt, html):
    """Places of INDEX_DIR whose change between D1 and D2 is most like the change at LON LAT
    (cosine similarity of normalised embedding differences)."""
    from rscbir import export
    from rscbir.change import query_change as run
    from rscbir.index import Index

    result = run(Index.open(index_dir), lonlat[0], lonlat[1], dates, k, all_pairs, threshold, exclude_radius)
    text = json.dumps(export.to_geojson(result)) if fmt == "geojson" else export.to_csv(result)
    export.write_text(text, output)
    if html:
        export.leaflet_map(result, html)

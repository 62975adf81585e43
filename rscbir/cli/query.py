"""``rscbir query``: where else does it look like this?"""

from __future__ import annotations

import click

from rscbir.cli import options


@click.command(
    epilog="""\b
Examples:
  rscbir query out/naip_index --lonlat -99.0630 47.0220 -k 10 --exclude-radius 500 -o out/hits.geojson
  rscbir query out/naip_index --image chip.png --date 20200831 --format csv
  rscbir query out/naip_index --lonlat -99.0630 47.0220 --positive m_4709963_se_14_1_20200831:3:9 \\
               --negative m_4709963_se_14_1_20090818:0:4 -o out/hits_round2.geojson
  rscbir query out/naip_index --xy 487500 5207500 --crs EPSG:26914 --preview out/hits.png --html out/hits.html""",
)
@click.argument("index_dir", type=click.Path(file_okay=False), metavar="INDEX_DIR")
@click.option("--image", type=click.Path(dir_okay=False), help="Query by an example chip: PNG/JPEG (RGB) or GeoTIFF with the index's bands.")
@click.option("--lonlat", type=float, nargs=2, metavar="LON LAT", callback=options.check_lonlat, help="Query by the indexed patch covering this point.")
@click.option("--xy", type=float, nargs=2, metavar="X Y", callback=options.check_xy, help="Like --lonlat, in the CRS given by --crs.")
@click.option("--crs", default=None, help="CRS of --xy, e.g. EPSG:26914.")
@click.option("--patch-id", default=None, help="Query by an indexed patch id (scene:row:col).")
@click.option("--query-date", default=None, metavar="YYYYMMDD", help="Date of the query patch for --lonlat/--xy (default: --date if one, else the latest).")
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True, help="Number of results.")
@click.option("--bbox", type=float, nargs=4, metavar="W S E N", callback=options.check_bbox, help="Only results intersecting this lon/lat box.")
@click.option("--date", "dates", multiple=True, metavar="YYYYMMDD", callback=options.check_dates, help="Only results of this date (repeatable).")
@click.option("--scene", "scenes", multiple=True, help="Only results of this scene id (repeatable).")
@click.option("--exclude-radius", type=float, default=None, metavar="METRES", help="Drop results within this distance of the query patch.")
@click.option("--qe", "qe", type=click.IntRange(0), default=10, show_default=True,
              help="Query expansion: add the K nearest patches to the query before ranking (0: off).")
@click.option("--positive", "positives", multiple=True, metavar="PATCH_ID", help="Relevance feedback: a patch marked right (repeatable).")
@click.option("--negative", "negatives", multiple=True, metavar="PATCH_ID", help="Relevance feedback: a patch marked wrong (repeatable).")
@click.option("--feedback", "feedback_file", type=click.Path(dir_okay=False),
              help="Marks from a GeoJSON/CSV (e.g. an earlier result, which lists the marks it used) with a `label` of "
                   "1 (right) or 0 (wrong); rows left empty are ignored.")
@click.option("--every-date", is_flag=True,
              help="List every date's patch as its own hit (default in a multi-date index: one hit per ground place, "
                   "best date first, its other matching dates in `dates`).")
@click.option("-o", "--output", default="-", callback=options.output_file, type=click.Path(dir_okay=False, allow_dash=True), help="Results file (default stdout).")
@click.option("--format", "fmt", type=click.Choice(["geojson", "csv"]), default="geojson", show_default=True, help="Results format.")
@click.option("--preview", callback=options.output_file, type=click.Path(dir_okay=False), help="PNG contact sheet of the query and the hits.")
@click.option("--html", callback=options.output_file, type=click.Path(dir_okay=False), help="HTML map of the hits with their imagery; one self-contained file that opens offline.")
def query(index_dir, image, lonlat, xy, crs, patch_id, query_date, k, bbox, dates, scenes, exclude_radius, qe, positives, negatives,
          feedback_file, every_date, output, fmt, preview, html):  # fmt: skip
    """Find the patches of INDEX_DIR most like an example: an image chip, the
    patch under a point, or an indexed patch. Results are ranked by cosine
    similarity to the query expanded by its nearest patches (--qe), as GeoJSON in
    EPSG:4326 (or CSV). Mark results right or wrong (--positive/--negative, or
    --feedback with an edited earlier result) and ask again to re-rank by them."""
    import json

    from rscbir import export
    from rscbir import query as q
    from rscbir.atomic import all_or_nothing
    from rscbir.index import Index
    given = [name for name, value in (("--image", image), ("--lonlat", lonlat), ("--xy", xy), ("--patch-id", patch_id)) if value]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --image, --lonlat, --xy or --patch-id")
    if xy and not crs:
        raise click.UsageError("--xy needs --crs (e.g. --crs EPSG:26914)")
    if image:  # only an image query runs the model (and loads torch)
        from rscbir.models.load import configure_threads

        configure_threads()
    opened = Index.open(index_dir)
    filters = q.Filters(bbox=tuple(bbox) if bbox else None, dates=tuple(dates), scenes=tuple(scenes), exclude_radius=exclude_radius)
    feedback = q.read_feedback(feedback_file, opened) if feedback_file else q.Feedback()
    feedback = feedback.add(positives, negatives)
    ranking = {"expansion": q.QueryExpansion(qe), "feedback": feedback, "places": not every_date}
    when = query_date or (dates[0] if len(dates) == 1 else None)
    if image:
        result = q.query_image(opened, image, k, filters, **ranking)
    elif lonlat:
        result = q.query_point(opened, lonlat[0], lonlat[1], k, when, filters, **ranking)
    elif xy:
        result = q.query_xy(opened, xy[0], xy[1], crs, k, when, filters, **ranking)
    else:
        result = q.query_patch(opened, patch_id, k, filters, **ranking)
    text = json.dumps(export.to_geojson(result)) if fmt == "geojson" else export.to_csv(result)
    with all_or_nothing():  # the results, the contact sheet and the map appear together or not at all
        export.write_text(text, output)
        if preview:
            export.contact_sheet(opened, result, preview, query_image=image)
        if html:
            export.results_map(result, html, opened)
    if output not in (None, "-"):
        best = f", best score {result.hits['score'].iloc[0]:.3f}" if len(result.hits) else ""
        click.echo(f"wrote {len(result.hits)} results to {output}{best}", err=True)

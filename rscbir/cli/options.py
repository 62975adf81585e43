"""Options shared by several commands, declared once (as in ``rasterio.rio.options``)."""

from __future__ import annotations

import click

from rscbir.tiling import EdgePolicy


def _split(ctx, param, value):
    if not value:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


bands_opt = click.option(
    "--bands", callback=_split, metavar="LIST",
    help="Bands to use, by name or 1-based index, comma-separated (e.g. B04,B03,B02 or 1,2,3).",
)  # fmt: skip
band_names_opt = click.option(
    "--band-names", callback=_split, metavar="LIST",
    help="Names for the bands of multi-band files (e.g. R,G,B,NIR).",
)  # fmt: skip
scale_opt = click.option(
    "--scale", default="auto", show_default=True, metavar="RULE",
    help="Scaling to float: auto, none, divide:10000 or percentile:2,98.",
)  # fmt: skip
date_opt = click.option(
    "--date", "dates", multiple=True, metavar="YYYYMMDD",
    help="Acquisition date, once per scene in order. Default: a date in the file name or TIFF tags.",
)  # fmt: skip
patch_size_opt = click.option(
    "--patch-size", default="64", show_default=True, metavar="LEN",
    help="Patch side in pixels (64) or ground units (640m, 1.28km).",
)  # fmt: skip
stride_opt = click.option(
    "--stride", default=None, metavar="LEN", help="Step between patches, pixels or ground units. Default: patch size.",
)  # fmt: skip
edge_opt = click.option(
    "--edge", type=click.Choice([e.value for e in EdgePolicy]), default="drop", show_default=True,
    help="Patches crossing the right/bottom edge: drop them, or pad with nodata.",
)  # fmt: skip
max_nodata_opt = click.option(
    "--max-nodata", type=click.FloatRange(0, 1), default=0.25, show_default=True,
    help="Skip patches whose nodata (or all-zero) pixel fraction exceeds this.",
)  # fmt: skip
resampling_opt = click.option(
    "--resampling", type=click.Choice(["nearest", "bilinear", "cubic", "average"]), default="bilinear",
    show_default=True, help="Resampling when bands or dates are read onto another grid.",
)  # fmt: skip


def length(value: str) -> int | str:
    """CLI length: plain digits are pixels, anything else keeps its unit."""
    return int(value) if value.strip().isdigit() else value


def scene_options(func):
    for option in reversed([bands_opt, band_names_opt, scale_opt, date_opt]):
        func = option(func)
    return func


def tiling_options(func):
    for option in reversed([patch_size_opt, stride_opt, edge_opt, max_nodata_opt, resampling_opt]):
        func = option(func)
    return func

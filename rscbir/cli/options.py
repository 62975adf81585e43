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
    "--scale", default=None, metavar="RULE",
    help="Scaling to float: auto (default), none, divide:10000 or percentile:2,98.",
)  # fmt: skip
preset_opt = click.option(
    "--preset", default=None, metavar="NAME",
    help="Band preset from configs/ (naip, sentinel2, landsat, rgb) or a YAML path: band names, RGB bands, scaling.",
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


def tiling_config(patch_size, stride, edge, max_nodata):
    from rscbir.tiling import TilingConfig

    return TilingConfig(length(patch_size), length(stride) if stride else None, edge, max_nodata)


def scene_options(func):
    for option in reversed([preset_opt, bands_opt, band_names_opt, scale_opt, date_opt]):
        func = option(func)
    return func


def tiling_options(func):
    for option in reversed([patch_size_opt, stride_opt, edge_opt, max_nodata_opt, resampling_opt]):
        func = option(func)
    return func


model_opt = click.option("--model", "backbone", default=None, metavar="NAME",
                         help="Backbone: efficientnet_lite0 (default, offline), efficientnet_lite1/2, resnet18, resnet50, "
                              "vgg16, efficientnet_b0, mobilenet_v2, mobilenet_v3_large, convnext_tiny.")  # fmt: skip
weights_opt = click.option("--weights", type=click.Path(dir_okay=False), default=None,
                           help="Local weights: a state dict for --model, or a checkpoint from `rscbir finetune`.")  # fmt: skip
all_bands_opt = click.option("--all-bands", is_flag=True,
                             help="Feed every band (the preset's all_bands) through a first conv inflated from RGB.")  # fmt: skip
pooling_opt = click.option("--pooling", type=click.Choice(["avg", "gem"]), default="avg", show_default=True,
                           help="Global pooling of the last feature map.")  # fmt: skip
input_size_opt = click.option("--input-size", type=int, default=224, show_default=True,
                              help="Patches are resized to this many pixels per side before the CNN (0: keep).")  # fmt: skip


runtime_opt = click.option("--runtime", type=click.Choice(["auto", "torch", "onnx"]), default="auto", show_default=True,
                           help="Forward pass on PyTorch or ONNX Runtime (auto: ONNX Runtime when installed; same vectors).")  # fmt: skip


device_opt = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                          help="Where the CNN runs; auto: CUDA when a GPU is visible, else CPU.")  # fmt: skip


def model_options(func):
    for option in reversed([model_opt, weights_opt, all_bands_opt, pooling_opt, input_size_opt, runtime_opt, device_opt]):
        func = option(func)
    return func


def open_scenes(locations, preset, bands, band_names, scale, dates):
    """CLI wrapper of :func:`rscbir.presets.open_scenes`."""
    from rscbir.presets import open_scenes as open_with_preset

    if dates and len(dates) != len(locations):
        raise click.BadParameter(f"give --date once per scene ({len(locations)}), or not at all", param_hint="--date")
    return open_with_preset(locations, preset, bands, band_names, scale, dates)


def model_for_scenes(scenes, preset, backbone, weights, all_bands, pooling, input_size):
    """CLI wrapper of :func:`rscbir.models.load.model_for_scenes`."""
    from rscbir.models.load import model_for_scenes as build

    return build(scenes, preset, backbone, weights, all_bands, input_size or None, pooling)

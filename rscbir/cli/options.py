"""Options shared by several commands, declared once (as in ``rasterio.rio.options``).

Each group of options reaches the command as one value: ``scene_options`` as
``scene_opts`` (:class:`rscbir.presets.SceneOptions`), ``tiling_options`` as
``tiling`` (:class:`rscbir.tiling.TilingConfig`) plus ``resampling``, and
``model_options`` as ``model_opts`` (:class:`rscbir.models.options.ModelOptions`). Defaults come from
:mod:`rscbir.defaults`, the same values the library uses.
Library modules are imported when a command runs, not at start-up.
"""

from __future__ import annotations

import functools

import click

from rscbir.defaults import DEFAULT_AUGMENT, DEFAULT_DIM, DEFAULT_INPUT_SIZE, DEFAULT_POOLING, DEFAULT_STAGES, DEFAULT_WHITEN
from rscbir.modes import Device, Pooling, Runtime, choices

EDGE_CHOICES = ["drop", "pad", "fit"]  # rscbir.tiling.EdgePolicy, spelled here so --help needs no rasterio


def split_list(ctx, param, value):
    """Click callback: ``a,b,c`` -> ("a", "b", "c"); empty -> None."""
    if not value:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


def check_output(path, folder: bool = False) -> None:
    """Refuse, before any work starts, an output that cannot be written (see :func:`rscbir.atomic.check_writable`)."""
    from rscbir.atomic import check_writable

    if path not in (None, "-"):
        check_writable(path, folder=folder)


def output_file(ctx, param, value):
    """Click callback for a file output: checked when the command line is read, before any work."""
    check_output(value)
    return value


def output_folder(ctx, param, value):
    """Click callback for a folder output (an index, an embedding store)."""
    check_output(value, folder=True)
    return value


def length(value: str | None) -> int | str | None:
    """CLI length: whole numbers are pixels, anything else keeps its unit (640m, 1.2km, 64px)."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return int(text)
    try:
        float(text)
    except ValueError:
        return text  # a ground length; rscbir.tiling reads the unit
    raise click.BadParameter(f"{value!r}: pixel sizes are whole numbers (or give a unit: 640m, 1.2km)")


def _bundle(names: list[str], target: str, build):
    """Decorator: gather the keyword arguments ``names`` into one value ``target`` = build(**them)."""

    def decorator(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            kwargs[target] = build(**{name: kwargs.pop(name) for name in names})
            return func(*args, **kwargs)

        return wrapper

    return decorator


def _apply(func, decorators):
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


# ----------------------------------------------------------------------- scenes
def _scene_options(preset, bands, band_names, scale, dates):
    from rscbir.presets import SceneOptions

    return SceneOptions(preset, bands, band_names, scale, tuple(dates))


def scene_options(func):
    """--preset --bands --band-names --scale --date, passed as ``scene_opts``."""
    return _apply(_bundle(["preset", "bands", "band_names", "scale", "dates"], "scene_opts", _scene_options)(func), [
        click.option("--preset", default=None, metavar="NAME",
                     help="Band preset shipped with rscbir (naip, sentinel2, landsat, rgb) or a YAML path: band names, "
                          "RGB bands, scaling."),
        click.option("--bands", callback=split_list, metavar="LIST",
                     help="Bands to use, by name or 1-based index, comma-separated (e.g. B04,B03,B02 or 1,2,3)."),
        click.option("--band-names", callback=split_list, metavar="LIST", help="Names for the bands of multi-band files (e.g. R,G,B,NIR)."),
        click.option("--scale", default=None, metavar="RULE", help="Scaling to float: auto (default), none, divide:10000 or percentile:2,98."),
        click.option("--date", "dates", multiple=True, metavar="YYYYMMDD",
                     help="Acquisition date, once per scene in order. Default: a dates.txt sidecar, acquisition tags or a sensing date in a known file name."),
    ])  # fmt: skip


# ----------------------------------------------------------------------- tiling
def _tiling(patch_size, stride, edge, max_nodata):
    from rscbir.tiling import TilingConfig

    return TilingConfig(length(patch_size), length(stride), edge, max_nodata)


def tiling_options(func):
    """--patch-size --stride --edge --max-nodata (as ``tiling``) and --resampling."""
    return _apply(_bundle(["patch_size", "stride", "edge", "max_nodata"], "tiling", _tiling)(func), [
        click.option("--patch-size", default="64", show_default=True, metavar="LEN",
                     help="Patch side in whole pixels (64) or ground units (640m, 1.28km)."),
        click.option("--stride", default=None, metavar="LEN", help="Step between patches, pixels or ground units. Default: patch size."),
        click.option("--edge", type=click.Choice(EDGE_CHOICES), default="drop", show_default=True,
                     help="Patches crossing the right/bottom edge: drop them, pad with nodata, or fit (move the last patch inward). "
                          "Pixel change maps always cover the image (drop becomes fit)."),
        click.option("--max-nodata", type=click.FloatRange(0, 1), default=0.25, show_default=True,
                     help="Skip patches whose nodata (or all-zero) pixel fraction exceeds this."),
        click.option("--resampling", type=click.Choice(["nearest", "bilinear", "cubic", "average"]), default="bilinear",
                     show_default=True, help="Resampling when bands or dates are read onto another grid."),
    ])  # fmt: skip


# ------------------------------------------------------------------------ model
def _model_options(backbone, weights, all_bands, pooling, input_size, runtime, device, stages, views):
    from rscbir.models.options import ModelOptions

    return ModelOptions(backbone, weights, all_bands, Pooling(pooling), input_size or None, Runtime(runtime), Device(device),
                        stages, int(views))  # fmt: skip


def model_options(func=None, *, pooling: str = DEFAULT_POOLING):
    """--model --weights --all-bands --pooling --input-size --runtime --device --stages --views, passed as ``model_opts``.

    ``pooling`` is the command's default: grid for search (it keeps where things lie: the same ground across dates),
    plain averages where change between two scenes was measured with them."""
    if func is None:
        return functools.partial(model_options, pooling=pooling)
    names = ["backbone", "weights", "all_bands", "pooling", "input_size", "runtime", "device", "stages", "views"]
    return _apply(_bundle(names, "model_opts", _model_options)(func), [
        click.option("--model", "backbone", default=None, metavar="NAME",
                     help="Backbone: efficientnet_lite0 (default, offline), efficientnet_lite1/2, resnet18, resnet50, "
                          "vgg16, efficientnet_b0, mobilenet_v2, mobilenet_v3_large, convnext_tiny."),
        click.option("--weights", type=click.Path(dir_okay=False), default=None,
                     help="Local weights: a state dict for --model, or a checkpoint from `rscbir finetune`."),
        click.option("--all-bands", is_flag=True, help="Feed every band (the preset's all_bands) through a first conv inflated from RGB."),
        click.option("--pooling", type=click.Choice(choices(Pooling)), default=pooling, show_default=True,
                     help="Pooling of each stage's feature map: avg, gem, or grid (averages of its 2 x 2 quarters)."),
        click.option("--input-size", type=int, default=DEFAULT_INPUT_SIZE, show_default=True,
                     help="Patches are resized to this many pixels per side before the CNN (0: keep)."),
        click.option("--runtime", type=click.Choice(choices(Runtime)), default="auto", show_default=True,
                     help="Forward pass on PyTorch or ONNX Runtime (auto: ONNX Runtime when installed; same vectors)."),
        click.option("--device", type=click.Choice(choices(Device)), default="auto", show_default=True,
                     help="Where the CNN runs; auto: CUDA when a GPU is visible, else CPU."),
        click.option("--stages", type=click.IntRange(1), default=DEFAULT_STAGES, show_default=True,
                     help="Pool and concatenate the last N stage outputs (mid-level texture + semantics; 1: last layer only)."),
        click.option("--views", type=click.Choice(["1", "2", "4", "8"]), default="1", show_default=True,
                     help="Average over this many flips/90-degree rotations of each patch (each view costs one more CNN pass)."),
    ])  # fmt: skip


def dim_option(func):
    return click.option("--dim", type=click.IntRange(0), default=DEFAULT_DIM, show_default=True,
                        help="Centred PCA to this many dimensions, fitted on the corpus (the first scenes indexed); 0: off.")(func)  # fmt: skip


def whiten_option(func):
    return click.option("--whiten", type=float, default=DEFAULT_WHITEN, show_default=True,
                        help="Whitening power with --dim: 0 centred PCA, 0.5 full whitening.")(func)  # fmt: skip


def json_flag(help: str):
    """``--json`` as a flag (print JSON instead of text), passed as ``as_json``."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def json_file_option(help: str = "Also write every figure here (JSON)."):
    """``--json FILE``: also write the figures to a file, checked before any work; passed as ``json_path``."""
    return click.option("--json", "json_path", callback=output_file, type=click.Path(dir_okay=False), help=help)


def batch_size_option(func):
    return click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True,
                        help="Patches per forward pass (8: as fast as 16 on small CPUs, and the peak memory of 10 NAIP tiles 593 MiB, not 832).")(func)  # fmt: skip


def workers_option(func):
    return click.option("--workers", type=click.IntRange(0), default=None,
                        help="Patch-reading worker processes (default: 0 on <= 2 cores, else 2).")(func)  # fmt: skip


def given_options(ctx, names) -> list[str]:
    """The ``--flags`` of ``names`` the user gave (command line or environment): options a mode would ignore are refused."""
    from click.core import ParameterSource

    return [f"--{name.replace('_', '-')}" for name in names
            if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)]  # fmt: skip


def progress_enabled(ctx) -> str:
    """How long work reports progress: a bar on a terminal, plain periodic lines otherwise, nothing with --quiet."""
    from rscbir.progress import progress_mode

    return progress_mode(quiet=ctx.obj["quiet"])


def augment_option(func):
    return click.option("--augment", type=click.IntRange(0), default=DEFAULT_AUGMENT, show_default=True, metavar="K",
                        help="Database-side augmentation: search vectors blend each patch with its K nearest (0: off).")(func)  # fmt: skip


# ------------------------------------------------------------------ coordinates
def _checked(check):
    """Click callback running one of :mod:`rscbir.validate`'s checks on a tuple option (None passes)."""

    def callback(ctx, param, value):
        if value is None or value == ():
            return value
        from rscbir.errors import RscbirError

        try:
            return check(value)
        except RscbirError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


def _check_lonlat(value):
    from rscbir import validate

    return validate.lonlat(*value)


def _check_xy(value):
    from rscbir import validate

    return validate.xy(*value)


def _check_bbox(value):
    from rscbir import validate

    return validate.bbox(value)


def _check_dates(value):
    from rscbir import validate

    return validate.dates(value)


check_lonlat, check_xy, check_bbox, check_dates = (_checked(f) for f in (_check_lonlat, _check_xy, _check_bbox, _check_dates))


def ordered_dates(dates) -> tuple[str, ...]:
    """Dates earliest first; a line on stderr when they were given in another order (change runs forward in time)."""
    from rscbir import validate

    given = validate.dates(dates)
    ordered = tuple(sorted(given))
    if ordered != given:
        click.echo(f"note: dates given as {' '.join(given)}; comparing {' '.join(ordered)} (earliest first)", err=True)
    return ordered

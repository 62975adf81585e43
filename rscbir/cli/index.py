"""``rscbir index build|remove|compact``: create or append an index, take scenes out of it, merge its segments."""

from __future__ import annotations

import contextlib

import click

from rscbir.cli import options

LEGACY_NOTE = "note: `rscbir index SCENE... -o DIR` is now `rscbir index {0} ...`; the old spelling will be removed"


class IndexGroup(click.Group):
    """``rscbir index`` with one subcommand per action. The spelling of earlier versions (``rscbir index SCENE...
    -o DIR``, ``--remove``, ``--remove-date``, ``--compact``) still works, with a note naming the new one."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = _from_legacy(list(args))
        return super().parse_args(ctx, args)


def _from_legacy(args: list[str]) -> list[str]:
    """Translate the old single-command spelling into ``build``, ``remove`` or ``compact``."""
    if "--compact" in args:
        action, args = "compact", [a for a in args if a != "--compact"]
    elif any(a in ("--remove", "--remove-date") or a.startswith(("--remove=", "--remove-date=")) for a in args):
        action = "remove"
        args = [{"--remove": "--scene", "--remove-date": "--date"}.get(a, a) for a in args]
        args = [a.replace("--remove-date=", "--date=").replace("--remove=", "--scene=") for a in args]
    else:
        action = "build"
    if action != "build":  # the index folder: `-o DIR` in the old spelling, a positional argument now
        for flag in ("-o", "--output"):
            if flag in args[:-1]:
                at = args.index(flag)
                args = [args[at + 1], *args[:at], *args[at + 2 :]]
    click.echo(LEGACY_NOTE.format(action), err=True)
    return [action, *args]


@click.group(cls=IndexGroup)
def index():
    """Build, append to, prune and compact an index folder (catalog, embeddings and FAISS segments)."""


@index.command(
    epilog="""\b
Example:
  rscbir index build ../shared/data/naip_timeseries/m_4709963_se_14_1_20090818.tif \\
                     ../shared/data/naip_timeseries/m_4709963_se_14_1_20200831.tif \\
                     --align --preset naip --patch-size 320m -o out/naip_index
  rscbir index build --from-embeddings out/naip_embeddings.parquet -o out/naip_again""",
)
@click.argument("scenes", nargs=-1, metavar="SCENE...")
@click.option("--from-embeddings", "embeddings", type=click.Path(dir_okay=False), metavar="FILE.parquet",
              help="Build from a GeoParquet of vectors (another model's, or `rscbir export`'s) instead of embedding scenes.")
@click.option("--vector-column", default=None, metavar="NAME", help="With --from-embeddings: the vector column (default: the only list column).")
@click.option("-o", "--output", required=True, callback=options.output_folder, type=click.Path(file_okay=False),
              help="Index folder (created, or appended to).")  # fmt: skip
@options.scene_options
@options.tiling_options
@options.model_options
@click.option("--align", is_flag=True, help="Read every scene onto the first scene's grid, cropped to the common footprint.")
@options.dim_option
@options.whiten_option
@click.option("--index-type", default="auto", show_default=True, metavar="FACTORY",
              help="FAISS factory string (Flat, HNSW32, IVF1024,PQ32 ...); auto: Flat up to 100k vectors, HNSW32 up to 1M, IVF-SQ8 beyond.")  # fmt: skip
@options.augment_option
@click.option("--centre-scenes/--no-centre-scenes", default=True, show_default=True,
              help="Ground, not acquisition: take each date's mean vector off and, in an aligned index of 2+ dates, whiten "
                   "what varies between dates at the same place, so a search finds the same ground on other dates.")
@options.batch_size_option
@options.workers_option
@click.option("--scheduler", default=None, metavar="local|ADDRESS",
              help="Embed and write the segments on Dask: `local` starts a LocalCluster (one worker per core), tcp://host:8786 "
                   "uses a running one (its workers must see the scenes and the index folder).")  # fmt: skip
@click.pass_context
def build(ctx, scenes, embeddings, vector_column, output, scene_opts, tiling, resampling, model_opts, align, dim, whiten, index_type,
          augment, centre_scenes, batch_size, workers, scheduler):  # fmt: skip
    """Index SCENE... for retrieval: patch catalog, embeddings and a FAISS index in one folder.

    Appending to an existing folder skips scenes already present (same id and
    content); a different model, weights, bands or tiling is refused. Writes are
    atomic: an interrupted run leaves the previous index readable, and the next
    run reuses the scenes it had already embedded. An unreadable scene among
    several is reported and skipped: exit code 3 says the run was partial.
    Each append adds one segment and leaves the existing ones untouched.
    """
    if embeddings:
        return _from_embeddings(ctx, scenes, embeddings, vector_column, output, index_type, augment)
    if not scenes:
        raise click.UsageError("give SCENE... to index, or --from-embeddings FILE.parquet")
    if vector_column:
        raise click.UsageError("--vector-column goes with --from-embeddings")
    from rasterio.enums import Resampling

    from rscbir.embed import EmbedOptions
    from rscbir.errors import IndexFileError
    from rscbir.index import build_index
    from rscbir.models.onnx_cache import feature_model_for

    model_opts, centre_scenes = _as_the_index_was_built(ctx, output, model_opts, centre_scenes)
    opened, preset, failed = scene_opts.open_each(scenes)
    # the cached ONNX graph (no torch in this process) unless Dask workers or reader processes need the torch model
    model, opened = feature_model_for(opened, preset, model_opts, use_cache=not scheduler and not workers)
    run = EmbedOptions(batch_size=batch_size, workers=workers, runtime=model_opts.runtime, device=model_opts.device, dim=dim or None, whiten=whiten,
                       resampling=Resampling[resampling], progress=options.progress_enabled(ctx))  # fmt: skip
    with contextlib.ExitStack() as stack:
        runner = None
        if scheduler:
            from rscbir.scale import dask_runner

            runner = stack.enter_context(dask_runner(scheduler, model, run))
        built, summary = build_index(output, opened, model, tiling, align=align, options=run, index_type=index_type, runner=runner,
                                     augment=augment, centre_scenes=centre_scenes, search=False)  # fmt: skip
    summary.failed[:0] = failed
    if summary.failed and not (summary.added or summary.skipped):  # nothing of this run succeeded: not "partial"
        raise IndexFileError("no scene could be indexed, the index is unchanged: " + "; ".join(f"{f['scene']}: {f['error']}" for f in summary.failed))
    click.echo(f"{output}: {len(built)} patches, {built.manifest.dim}-d, FAISS {built.manifest.index_type}; {_describe(summary)}", err=True)
    if summary.failed:
        for failure in summary.failed:
            click.echo(f"skipped {failure['scene']}: {failure['error']}", err=True)
        ctx.exit(3)  # partial run: the index holds the other scenes


# options that only mean something when scenes are embedded (not with --from-embeddings)
EMBEDDING_ONLY = ("preset", "bands", "band_names", "scale", "dates", "patch_size", "stride", "edge", "max_nodata", "resampling",
                  "backbone", "weights", "all_bands", "pooling", "input_size", "runtime", "device", "stages", "views", "align",
                  "dim", "whiten", "centre_scenes", "batch_size", "workers", "scheduler")  # fmt: skip


def _from_embeddings(ctx, scenes, embeddings, vector_column, output, index_type, augment) -> None:
    """``index build --from-embeddings``: the vectors of a GeoParquet file as a new index."""
    from click.core import ParameterSource

    from rscbir.index.imports import import_embeddings

    given = options.given_options(ctx, EMBEDDING_ONLY)
    if scenes or given:
        raise click.UsageError(f"{' '.join(list(scenes)[:1] + given)} cannot be used with --from-embeddings: the vectors are made already")
    if ctx.get_parameter_source("augment") is not ParameterSource.COMMANDLINE:
        augment = None  # the exported index's own, else 0
    built = import_embeddings(embeddings, output, vector_column, index_type, augment)
    click.echo(f"{output}: {len(built)} patches, {built.manifest.dim}-d, FAISS {built.manifest.index_type}; "
               f"{len(built.manifest.scenes)} scene(s) imported from {embeddings}", err=True)  # fmt: skip


def _as_the_index_was_built(ctx, output, model_opts, centre_scenes):
    """An append without --pooling or --centre-scenes takes the index's own (an index made before a default changed
    stays appendable); options given on the command line are checked against the index as they are."""
    import dataclasses
    import json
    from pathlib import Path

    from click.core import ParameterSource

    from rscbir.index.layout import MANIFEST
    from rscbir.index.manifest import Manifest
    from rscbir.modes import Pooling

    try:
        manifest = Manifest.from_dict(json.loads((Path(output) / MANIFEST).read_text()))
        pooling, centred = Pooling(manifest.model["pooling"]), manifest.centre_scenes
    except (OSError, ValueError, KeyError, TypeError):
        return model_opts, centre_scenes  # a new folder (or a damaged one: the build says what is wrong)
    if ctx.get_parameter_source("pooling") is not ParameterSource.COMMANDLINE:
        model_opts = dataclasses.replace(model_opts, pooling=pooling)
    if ctx.get_parameter_source("centre_scenes") is not ParameterSource.COMMANDLINE:
        centre_scenes = centred
    return model_opts, centre_scenes


def _describe(summary) -> str:
    parts = [f"{len(summary.added)} scene(s) added"]
    if summary.skipped:
        parts.append(f"{len(summary.skipped)} already indexed ({', '.join(summary.skipped)})")
    if summary.reused:
        parts.append(f"{len(summary.reused)} resumed from staged embeddings")
    if summary.compacted:
        parts.append(f"{summary.compacted} segments compacted into one")
    if summary.failed:
        parts.append(f"{len(summary.failed)} FAILED and skipped")
    return "; ".join(parts)


@index.command(epilog="\b\nExamples:\n  rscbir index remove out/naip_index --date 2009-08-18\n  rscbir index remove out/idx --scene SCENE_ID")
@click.argument("index_dir", callback=options.output_folder, type=click.Path(file_okay=False), metavar="INDEX_DIR")
@click.option("--scene", "scene_ids", multiple=True, metavar="SCENE_ID", help="Remove this scene's patches (repeatable).")
@click.option("--date", "dates", multiple=True, metavar="DATE", help="Remove every scene of this date (YYYY-MM-DD or YYYYMMDD; repeatable).")
def remove(index_dir, scene_ids, dates):
    """Take scenes out of INDEX_DIR, by id or by date, with the same atomic swap as an append: a segment holding
    only removed scenes is dropped, one holding both is rewritten with the rows it keeps."""
    if not (scene_ids or dates):
        raise click.UsageError("give --scene SCENE_ID or --date DATE (repeatable)")
    from rscbir.index import remove_from_index

    kept, removed = remove_from_index(index_dir, scene_ids, dates)
    click.echo(f"{index_dir}: removed {', '.join(removed)}; {len(kept)} patches from {len(kept.manifest.scenes)} scene(s) remain", err=True)


@index.command(epilog="\b\nExample:\n  rscbir index compact out/naip_index")
@click.argument("index_dir", callback=options.output_folder, type=click.Path(file_okay=False), metavar="INDEX_DIR")
def compact(index_dir):
    """Merge the segments of INDEX_DIR into one (same ids, same answers); appends do it past 16 segments."""
    from rscbir.index import compact_index

    merged_index, merged = compact_index(index_dir)
    state = f"{merged} segments merged into one" if merged else "already one segment, nothing to do"
    click.echo(f"{index_dir}: {state}; {len(merged_index)} patches, FAISS {merged_index.manifest.index_type}", err=True)

"""``rscbir index``: tile, embed and index scenes into one folder (created or appended)."""

from __future__ import annotations

import contextlib

import click

from rscbir.cli import options


@click.command(
    epilog="""\b
Example:
  rscbir index ../shared/data/naip_timeseries/m_4709963_se_14_1_20090818.tif \\
               ../shared/data/naip_timeseries/m_4709963_se_14_1_20200831.tif \\
               --align --preset naip --patch-size 320m -o out/naip_index""",
)
@click.argument("scenes", nargs=-1, metavar="SCENE...")
@click.option("-o", "--output", callback=options.output_folder, type=click.Path(file_okay=False),
              help="Index folder (created, or appended to). With --remove/--compact the folder may be the one argument instead.")
@options.scene_options
@options.tiling_options
@options.model_options
@click.option("--align", is_flag=True, help="Read every scene onto the first scene's grid, cropped to the common footprint.")
@options.dim_option
@click.option("--whiten", type=float, default=0.0, show_default=True, help="Whitening power with --dim: 0 centred PCA, 0.5 full whitening.")
@click.option("--index-type", default="auto", show_default=True, metavar="FACTORY",
              help="FAISS factory string (Flat, HNSW32, IVF1024,PQ32 ...); auto: Flat up to 100k vectors, HNSW32 up to 1M, IVF-SQ8 beyond.")  # fmt: skip
@options.augment_option
@click.option("--centre-scenes", is_flag=True,
              help="Subtract each scene's mean vector: what a whole date shares (light, season) no longer hides the same ground.")
@options.batch_size_option
@options.workers_option
@click.option("--scheduler", default=None, metavar="local|ADDRESS",
              help="Embed on Dask: `local` starts a LocalCluster (one worker per core), tcp://host:8786 uses a running one.")  # fmt: skip
@click.option("--remove", "remove_scenes", multiple=True, metavar="SCENE_ID",
              help="Remove this scene's patches from the index in OUTPUT (repeatable; no SCENE arguments).")  # fmt: skip
@click.option("--remove-date", "remove_dates", multiple=True, metavar="DATE",
              help="Remove every scene of this date (YYYY-MM-DD or YYYYMMDD) from the index (repeatable).")  # fmt: skip
@click.option("--compact", is_flag=True, help="Merge the index's segments into one (no SCENE arguments); appends do it past 16 segments.")
@click.pass_context
def index(ctx, scenes, output, scene_opts, tiling, resampling, model_opts, align, dim, whiten, index_type, augment, centre_scenes, batch_size,
          workers, scheduler, remove_scenes, remove_dates, compact):  # fmt: skip
    """Index SCENE... for retrieval: patch catalog, embeddings and a FAISS index in one folder.

    Appending to an existing folder skips scenes already present (same id and
    content); a different model, weights, bands or tiling is refused. Writes are
    atomic: an interrupted run leaves the previous index readable, and the next
    run reuses the scenes it had already embedded. An unreadable scene among
    several is reported and skipped: exit code 3 says the run was partial.
    With --remove / --remove-date (and no SCENE) patches leave the index the
    same atomic way. Each append adds one segment and leaves the existing ones
    untouched; --compact merges them.
    """
    if (compact or remove_scenes or remove_dates) and output is None and len(scenes) == 1:
        output, scenes = scenes[0], ()  # rscbir index IDX --remove SCENE_ID
        options.check_output(output, folder=True)
    if output is None:
        raise click.UsageError("missing -o/--output INDEX_DIR")
    if compact:
        if scenes or remove_scenes or remove_dates:
            raise click.UsageError("--compact rewrites an existing index: give no SCENE and no --remove")
        from rscbir.index import compact_index

        merged_index, merged = compact_index(output)
        state = f"{merged} segments merged into one" if merged else "already one segment, nothing to do"
        click.echo(f"{output}: {state}; {len(merged_index)} patches, FAISS {merged_index.manifest['index_type']}", err=True)
        return
    if remove_scenes or remove_dates:
        if scenes:
            raise click.UsageError("--remove/--remove-date edit an existing index: give no SCENE arguments")
        from rscbir.index import remove_from_index

        kept, removed = remove_from_index(output, remove_scenes, remove_dates)
        click.echo(f"{output}: removed {', '.join(removed)}; {len(kept)} patches from {len(kept.manifest['scenes'])} scene(s) remain", err=True)
        return
    if not scenes:
        raise click.UsageError("give SCENE... to index (or --remove/--remove-date to take scenes out)")
    from rasterio.enums import Resampling

    from rscbir.embed import EmbedOptions
    from rscbir.index import build_index
    from rscbir.models.load import configure_threads

    configure_threads()
    opened, preset, failed = scene_opts.open_each(scenes)
    model, opened = model_opts.for_scenes(opened, preset)
    run = EmbedOptions(batch_size=batch_size, workers=workers, runtime=model_opts.runtime, device=model_opts.device, dim=dim or None, whiten=whiten,
                       resampling=Resampling[resampling], progress=options.progress_enabled(ctx))  # fmt: skip
    with contextlib.ExitStack() as stack:
        runner = None
        if scheduler:
            from rscbir.scale import dask_runner

            runner = stack.enter_context(dask_runner(scheduler, model, run))
        built, summary = build_index(output, opened, model, tiling, align, run, index_type, runner, augment, centre_scenes)
    summary["failed"] = failed + summary["failed"]
    if summary["failed"] and not (summary["added"] or summary["skipped"]):  # nothing of this run succeeded: not "partial"
        from rscbir.errors import IndexFileError

        raise IndexFileError("no scene could be indexed, the index is unchanged: " + "; ".join(f"{f['scene']}: {f['error']}" for f in summary["failed"]))
    parts = [f"{len(summary['added'])} scene(s) added"]
    if summary["skipped"]:
        parts.append(f"{len(summary['skipped'])} already indexed ({', '.join(summary['skipped'])})")
    if summary["reused"]:
        parts.append(f"{len(summary['reused'])} resumed from staged embeddings")
    if summary.get("compacted"):
        parts.append(f"{summary['compacted']} segments compacted into one")
    if summary["failed"]:
        parts.append(f"{len(summary['failed'])} FAILED and skipped")
    click.echo(f"{output}: {len(built)} patches, {built.manifest['dim']}-d, FAISS {built.manifest['index_type']}; " + "; ".join(parts), err=True)
    if summary["failed"]:
        for failure in summary["failed"]:
            click.echo(f"skipped {failure['scene']}: {failure['error']}", err=True)
        ctx.exit(3)  # partial run: the index holds the other scenes

"""``rscbir check``: re-hash an index's files against the checksums its manifest recorded (like ``git fsck``)."""

from __future__ import annotations

import json

import click

from rscbir.cli import options


@click.command(epilog="\b\nExample:\n  rscbir check out/naip_index")
@click.argument("index_dir", type=click.Path(file_okay=False), metavar="INDEX_DIR")
@options.json_flag("Print the report as JSON.")
@click.pass_context
def check(ctx, index_dir, as_json):
    """Verify INDEX_DIR: every data file is re-read and compared with the size and checksum recorded when it was
    written. Exit code 0 when all match, 1 when a file is damaged or missing (each is named)."""
    from rscbir.index.layout import verify_index

    report = verify_index(index_dir)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for damaged in report["damaged"]:
            click.echo(f"DAMAGED {damaged['file']}: {damaged['problem']}")
        for name in report["unchecked"]:
            click.echo(f"unchecked {name}: written before checksums were recorded")
        state = "damaged: rebuild it with `rscbir index build`" if report["damaged"] else "ok"
        click.echo(f"{index_dir}: {report['files']} files, {report['bytes'] / 2**20:.1f} MiB verified; {state}", err=True)
    if report["damaged"]:
        ctx.exit(1)

"""``rscbir serve``: a local web map to explore an index."""

from __future__ import annotations

import click


@click.command(epilog="\b\nExamples:\n  rscbir serve out/naip_index\n  rscbir serve out/naip_index --port 8080")
@click.argument("index_dir", type=click.Path(file_okay=False), metavar="INDEX_DIR")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. The default is this machine only; 0.0.0.0 shares the index with your network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to listen on (0: any free port).")
def serve(index_dir, host, port):
    """Serve INDEX_DIR as a web map: the imagery per date, click to search with the patch under the
    click, mark results right or wrong and search again, see change between two dates, download the
    results as GeoJSON. A JSON API for scripts sits under /api (e.g. /api/query?lon=&lat=&k=).
    Read-only: an append by `rscbir index build` shows on the next request. Stop with Ctrl+C."""
    from rscbir.web.page import make_server

    server = make_server(index_dir, host, port)
    click.echo(f"rscbir serve: {index_dir} at {server.url} (Ctrl+C to stop)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()

"""The page of ``rscbir serve``: a Dash app with a dash-leaflet map over one index.

Click the map to search with the patch under the click (or, in the change view,
to find places that changed like it); draw a box to keep results inside it; mark
results right or wrong and search again (rounds accumulate); download the results
as GeoJSON. Leaflet, Dash and React come from the installed wheels; the imagery
and change tiles from :mod:`rscbir.web.api`.
"""

from __future__ import annotations

import errno
import os

import dash

from rscbir.errors import PortError
from rscbir.web.api import install
from rscbir.web.callbacks import register_callbacks
from rscbir.web.layout import page_layout

def create_app(index_dir: str | os.PathLike) -> dash.Dash:
    """The Dash app (its Flask server carries the JSON API) for the index in ``index_dir``."""
    app = dash.Dash(__name__, title="rscbir", update_title=None, serve_locally=True, suppress_callback_exceptions=True)
    live = install(app.server, index_dir)
    app.layout = page_layout(live, index_dir)
    register_callbacks(app, live)
    return app


class Server:
    """The app of an index behind waitress: a fixed pool of worker threads, so each keeps its PROJ
    context between requests (a new thread per request, as werkzeug's server does, pays ~25 ms for it)."""

    def __init__(self, index_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, threads: int = 8) -> None:
        from waitress.server import create_server

        self.host = host
        app = create_app(index_dir).server
        try:
            self._server = create_server(app, host=host, port=port, threads=threads, ident="rscbir")
        except OSError as exc:
            reason = {errno.EADDRINUSE: "the port is busy: another program listens there",
                      errno.EACCES: "this user may not open that port", errno.EADDRNOTAVAIL: "not an address of this machine",
                      }.get(exc.errno, exc.strerror or str(exc))  # fmt: skip
            raise PortError(f"cannot listen on {host}:{port} ({reason}); pick another with --port (--port 0: any free port)") from None

    @property
    def port(self) -> int:
        return self._server.effective_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def serve_forever(self) -> None:
        self._server.run()

    def shutdown(self) -> None:
        self._server.close()


def make_server(index_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, threads: int = 8) -> Server:
    """A server for the app of ``index_dir`` (``port=0`` picks a free port); call ``serve_forever()``."""
    return Server(index_dir, host, port, threads)

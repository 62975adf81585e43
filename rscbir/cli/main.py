"""The ``rscbir`` command group: logging set-up and user-error handling."""

from __future__ import annotations

import logging

import click

from rscbir import __version__
from rscbir.errors import RscbirError


class UserError(click.ClickException):
    """A user mistake: one line on stderr, exit code 2, no traceback."""

    exit_code = 2


class RscbirGroup(click.Group):
    """Turns :class:`rscbir.errors.RscbirError` into :class:`UserError`."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RscbirError as exc:
            raise UserError(str(exc)) from None


@click.group(cls=RscbirGroup)
@click.version_option(__version__, prog_name="rscbir")
@click.option("-v", "--verbose", count=True, help="More log output (repeat for debug).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or log output.")
@click.pass_context
def cli(ctx, verbose: int, quiet: bool) -> None:
    """Content-based image retrieval and change retrieval for satellite rasters."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = {"quiet": quiet}

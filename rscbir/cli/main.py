"""The ``rscbir`` command group: logging set-up and user-error handling."""

from __future__ import annotations

import logging
import os
import sys

import click

from rscbir import __version__
from rscbir.errors import RscbirError


class UserError(click.ClickException):
    """A user mistake: one line on stderr, exit code 2, no traceback."""

    exit_code = 2


class EnvironmentFault(click.ClickException):
    """The machine refused (a read-only folder, a full disk, a vanished file): one line, exit code 1."""

    exit_code = 1


def describe_os_error(exc: OSError) -> str:
    """One line naming the path and the cause of an :class:`OSError`."""
    text = str(exc).strip()
    cause = exc.strerror or (text.splitlines()[0] if text else type(exc).__name__)
    text = f"{exc.filename}: {cause}" if exc.filename is not None else cause
    return f"{text} (nothing was written: outputs appear whole or not at all)"


BROKEN_PIPE_EXIT = 141  # what a shell reports for a command ended by SIGPIPE (128 + 13)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush into the closed pipe raises nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


class RscbirGroup(click.Group):
    """One error policy for every command: user mistakes (:class:`rscbir.errors.RscbirError`) exit 2,
    faults of the machine (any other :class:`OSError`: EACCES, ENOSPC, EROFS) exit 1, each as one line."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RscbirError as exc:
            raise UserError(str(exc)) from None
        except BrokenPipeError:  # `rscbir ... | head`: the reader has what it wanted; end quietly, as a shell tool does
            _silence_stdout()
            ctx.exit(BROKEN_PIPE_EXIT)
        except OSError as exc:
            raise EnvironmentFault(describe_os_error(exc)) from None


@click.group(cls=RscbirGroup)
@click.version_option(__version__, prog_name="rscbir")
@click.option("-v", "--verbose", count=True, help="More log output (repeat for debug).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or log output.")
@click.pass_context
def cli(ctx, verbose: int, quiet: bool) -> None:
    """Content-based image retrieval and change retrieval for satellite rasters."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for chatty in ("distributed", "bokeh", "tornado", "numexpr", "werkzeug", "waitress"):  # third-party loggers speak only with -v
        logging.getLogger(chatty).setLevel(level if verbose else max(level, logging.WARNING))
    ctx.obj = {"quiet": quiet}

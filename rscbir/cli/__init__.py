"""The ``rscbir`` command line: a thin click layer over the library API."""

from rscbir.cli.info import info
from rscbir.cli.main import cli
from rscbir.cli.tile import tile

cli.add_command(info)
cli.add_command(tile)

__all__ = ["cli"]

"""The ``rscbir`` command line: a thin click layer over the library API."""

from rscbir.cli.change import change, query_change
from rscbir.cli.check import check
from rscbir.cli.embed import embed
from rscbir.cli.evaluate import eval_group
from rscbir.cli.export import export
from rscbir.cli.finetune import finetune
from rscbir.cli.finetune_change import finetune_change
from rscbir.cli.index import index
from rscbir.cli.info import info
from rscbir.cli.query import query
from rscbir.cli.serve import serve
from rscbir.cli.main import cli
from rscbir.cli.tile import tile

cli.add_command(change)
cli.add_command(check)
cli.add_command(embed)
cli.add_command(eval_group)
cli.add_command(export)
cli.add_command(finetune)
cli.add_command(finetune_change)
cli.add_command(index)
cli.add_command(info)
cli.add_command(query)
cli.add_command(query_change)
cli.add_command(serve)
cli.add_command(tile)

__all__ = ["cli"]

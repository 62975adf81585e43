from rscbir.cli import cli

cli(prog_name="rscbir")

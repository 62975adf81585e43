import shlex
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import write_raster
from rscbir.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_tile_writes_catalog(rgb_tif, tmp_path):
    out = tmp_path / "tiles.parquet"
    result = run("tile", rgb_tif, "--patch-size", "32", "--stride", "16", "-o", out)
    assert result.exit_code == 0, result.output
    assert "wrote 20 patches" in result.output
    catalog = gpd.read_parquet(out)
    assert len(catalog) == 20 and catalog.crs.to_epsg() == 4326
    assert set(catalog["date"]) == {"2020-01-02"}


def test_tile_dates_bands_and_geojson(rgb_tif, tmp_path):
    out = tmp_path / "tiles.geojson"
    result = run("tile", rgb_tif, "--bands", "B3,B1", "--date", "20210101", "--patch-size", "320m", "-o", out)
    assert result.exit_code == 0, result.output
    assert {str(d)[:10] for d in gpd.read_file(out)["date"]} == {"2021-01-01"}


COMMANDS = [["tile"], ["info"], ["embed"], ["finetune"], ["index", "build"], ["index", "remove"], ["index", "compact"], ["query"],
            ["change"], ["query-change"], ["export"],
            ["eval", "retrieval"], ["eval", "change"], ["eval", "across-dates"]]  # fmt: skip


def examples(help_text: str) -> list[list[str]]:
    """The example command lines at the end of a --help text (continuation lines joined)."""
    body = help_text[help_text.rindex("Example"):].splitlines()[1:]
    joined = " ".join(line.strip() for line in body).replace("\\ ", "")
    return [shlex.split("rscbir " + part) for part in joined.split("rscbir ")[1:]]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_examples_parse_as_real_command_lines(command, monkeypatch, tmp_path):
    """Every example in --help parses with that command's own options: names, choices and value types
    are checked by click (the command body is not run here; `make demo` runs them)."""
    result = run(*command, "--help")
    assert result.exit_code == 0
    found = examples(result.output)
    assert found, result.output
    # a scratch checkout: output options check their folder while parsing (as `make demo` creates out/),
    # and the examples name ../shared/data relative to the checkout
    checkout = tmp_path / "checkout"
    (checkout / "out").mkdir(parents=True)
    (tmp_path / "shared").symlink_to(ROOT.parent / "shared")
    monkeypatch.chdir(checkout)
    for argv in found:
        assert argv[1 : 1 + len(command)] == command, argv
        target = cli
        for name in command:
            target = target.commands[name]
        target.make_context(" ".join(command), argv[1 + len(command) :])  # raises click.UsageError on a bad option


def test_info(rgb_tif):
    result = run("info", rgb_tif)
    assert result.exit_code == 0 and '"crs": "EPSG:32618"' in result.output


def _bad_inputs(tmp_path, rgb_tif):
    nocrs = write_raster(tmp_path / "nocrs.tif", np.ones((1, 64, 64), np.uint8), crs=None)
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\x00garbage")
    truncated = write_raster(tmp_path / "trunc.tif", np.random.default_rng(0).integers(0, 255, (3, 300, 300), dtype=np.uint8))
    truncated.write_bytes(truncated.read_bytes()[:50000])
    far = write_raster(tmp_path / "far.tif", np.ones((1, 64, 64), np.uint8), transform=__import__("affine").Affine(10, 0, 900000, 0, -10, 100000))
    return {
        "no CRS": ([nocrs], "no CRS"),
        "not a raster": ([junk], "not a readable raster"),
        "truncated": ([truncated], "trunc.tif"),
        "patch too large": ([rgb_tif, "--patch-size", "500"], "larger than the scene"),
        "no common footprint": ([rgb_tif, far, "--align"], "does not overlap"),
        "unknown band": ([rgb_tif, "--bands", "B9"], "no band named"),
    }


@pytest.mark.parametrize("case", ["no CRS", "not a raster", "truncated", "patch too large", "no common footprint", "unknown band"])
def test_bad_input_exit_2_one_line_no_output(tmp_path, rgb_tif, case):
    args, message = _bad_inputs(tmp_path, rgb_tif)[case]
    out = tmp_path / "out" / "tiles.parquet"
    out.parent.mkdir()
    result = run("tile", *args, "-o", out)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert list(out.parent.iterdir()) == []  # nothing half-written


def test_a_closed_pipe_ends_quietly(rgb_tif):
    """`rscbir ... | head`: when the reader has gone, rscbir stops without an error line or a traceback, exit 141
    (as a shell reports a command ended by SIGPIPE)."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "rscbir", "info", str(rgb_tif)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before rscbir writes a byte
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 141 and stderr.decode().strip() == ""


def test_progress_is_plain_lines_off_a_terminal_and_nothing_with_quiet(rgb_tif, tmp_path):
    """A log or CI (stderr not a terminal) gets plain lines, not a bar's carriage returns; -q gets none."""
    result = run("tile", rgb_tif, "--patch-size", "64", "-o", tmp_path / "c.parquet")
    assert result.exit_code == 0, result.output
    done = [line for line in result.output.splitlines() if " patches done in " in line]
    assert len(done) == 1 and "\r" not in result.output and "patches/s" in done[0]
    quiet = run("-q", "tile", rgb_tif, "--patch-size", "64", "-o", tmp_path / "q.parquet")
    assert quiet.exit_code == 0 and " done in " not in quiet.output


def test_progress_lines_say_how_far_at_what_rate_and_how_long_is_left():
    import io

    from rscbir.progress import progress_mode, track

    stream = io.StringIO()
    assert list(track(range(4), 4, "scene", "patches", "lines", every=0, stream=stream)) == [0, 1, 2, 3]
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5 and lines[1].startswith("scene: 2/4 patches (50 %)") and "left" in lines[1]
    assert lines[-1].startswith("scene: 4 patches done in")
    assert progress_mode(quiet=True) == "off" and progress_mode(stream=io.StringIO()) == "lines"
    with pytest.raises(ValueError, match="bar, lines, off"):
        list(track(range(2), 2, "x", mode="loud"))

"""Start-up time of the CLI: how long a command takes before it does any work.

Heavy libraries (torch, faiss, geopandas, onnxruntime) are imported only by the commands that need
them, so `rscbir --help` and `rscbir info INDEX` should answer in well under 0.5 s. Each command
runs as a fresh process, round-robin with the others (so a noisy moment hits every row alike), and
the median of the runs is reported beside `python -c pass` and the import of the heavy libraries.

    python benchmarks/bench_startup.py [--runs 9] [--index out/naip_index]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("RSCBIR_DATA", HERE.parents[1] / "shared" / "data"))
NAIP = DATA / "naip_timeseries" / "m_4709963_se_14_1_20090818.tif"
RSCBIR = [sys.executable, "-m", "rscbir"]
sys.path.insert(0, str(HERE))
from record import record  # noqa: E402


def small_index(folder: Path) -> Path:
    """A real one-scene index (NAIP 2009, 320 m patches) to describe."""
    target = folder / "naip_index"
    subprocess.run([*RSCBIR, "index", "build", str(NAIP), "--preset", "naip", "--patch-size", "320m", "-o", str(target)],
                   check=True, capture_output=True)  # fmt: skip
    return target


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--index", type=Path, default=None, help="An existing index to describe (default: build a small one).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        index = args.index or small_index(Path(scratch))
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "rscbir --help": [*RSCBIR, "--help"],
            "rscbir query --help": [*RSCBIR, "query", "--help"],
            "rscbir info INDEX": [*RSCBIR, "info", str(index)],
            "rscbir info INDEX --json": [*RSCBIR, "info", str(index), "--json"],
            "rscbir check INDEX": [*RSCBIR, "check", str(index)],
            "import torch, faiss, geopandas (for scale)": [sys.executable, "-c", "import torch, faiss, geopandas"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for name, argv in commands.items():  # warm the file cache once
            timed(argv)
        for _ in range(args.runs):
            for name, argv in commands.items():
                times[name].append(timed(argv))
    rows = [f"| {name} | {statistics.median(t):.3f} | {min(t):.3f} | {max(t):.3f} |" for name, t in times.items()]
    text = "\n".join(
        [
            f"\n## Start-up time ({dt.date.today().isoformat()})\n",
            f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}. "
            f"Command: `python benchmarks/bench_startup.py --runs {args.runs}`. Each command is a fresh process, "
            "run round-robin with the others after one warm-up; seconds of wall time. The index is a real "
            "one-scene NAIP index (320 m patches).\n",
            "| command | median s | min s | max s |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    )
    record(text, "startup", {name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t)} for name, t in times.items()})


if __name__ == "__main__":
    main()

"""Run ``rscbir`` in a fresh process and read its time and peak memory (its own VmHWM: Linux carries ``ru_maxrss``
across exec, so a child's ``ru_maxrss`` would start at the benchmark's own peak)."""

from __future__ import annotations

import subprocess
import sys
import time

CODE = ("import runpy, sys; sys.argv = ['rscbir', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('rscbir', run_name='__main__')\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0], file=sys.stderr)")  # fmt: skip


def rscbir_child(*args) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of ``rscbir ARGS`` in a fresh process; exits with its stderr when it fails."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CODE, *map(str, args)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"rscbir {' '.join(map(str, args))} failed:\n{done.stderr[-2000:]}")
    return seconds, int(done.stderr.strip().splitlines()[-1]) / 1024


__all__ = ["rscbir_child"]

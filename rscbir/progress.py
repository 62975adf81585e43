"""Progress of long work, as people expect it: a bar on a terminal, plain periodic lines in a log, nothing with -q.

A bar (tqdm: count, rate, time left) only makes sense where a terminal redraws it; written to a file or a CI log its
carriage returns pile up into one unreadable line. There, every ``every`` seconds one plain line says how far the
work is, at what rate and how long is left, and a last line says it is done.
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TextIO

MODES = ("bar", "lines", "off")
EVERY = 10.0  # seconds between plain lines


def progress_mode(quiet: bool = False, stream: TextIO | None = None) -> str:
    """``off`` when quiet, ``bar`` when ``stream`` (stderr) is a terminal, else ``lines``."""
    stream = stream or sys.stderr
    if quiet:
        return "off"
    return "bar" if getattr(stream, "isatty", lambda: False)() else "lines"


def track(items: Iterable, total: int | None, desc: str, unit: str = "it", mode: str | bool = "off",
          every: float = EVERY, stream: TextIO | None = None) -> Iterator:  # fmt: skip
    """``items``, reporting progress as ``mode`` says (``True`` is the mode for stderr, ``False`` is ``off``)."""
    if mode is True:
        mode = progress_mode()
    if mode in (False, None, "off"):
        return iter(items)
    if mode == "bar":
        from tqdm import tqdm

        return iter(tqdm(items, total=total, desc=desc, unit=unit))
    if mode != "lines":
        raise ValueError(f"progress mode must be one of {', '.join(MODES)}, not {mode!r}")
    return _lines(items, total, desc, unit, every, stream or sys.stderr)


def _lines(items: Iterable, total: int | None, desc: str, unit: str, every: float, stream: TextIO) -> Iterator:
    start = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= every:
            last = now
            print(_line(desc, done, total, unit, now - start), file=stream, flush=True)
    print(_line(desc, done, total, unit, time.monotonic() - start, finished=True), file=stream, flush=True)


def _line(desc: str, done: int, total: int | None, unit: str, elapsed: float, finished: bool = False) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    if finished:
        return f"{desc}: {done} {unit} done in {_clock(elapsed)} ({rate:.1f} {unit}/s)"
    if total:
        left = (total - done) / rate if rate > 0 else float("nan")
        return f"{desc}: {done}/{total} {unit} ({100 * done / total:.0f} %), {rate:.1f} {unit}/s, about {_clock(left)} left"
    return f"{desc}: {done} {unit}, {rate:.1f} {unit}/s"


def _clock(seconds: float) -> str:
    if seconds != seconds:  # nan: no rate yet
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


__all__ = ["progress_mode", "track", "MODES"]

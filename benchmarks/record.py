"""Recording a benchmark: its section of results.md is replaced (not appended) and its figures written as JSON.

results.md is the current document: one section per figure, headed ``## TITLE (DATE)``. A run replaces the
section with the same TITLE (whatever its date) or adds one at the end; git keeps the history. The same
figures go to ``benchmarks/results/NAME.json`` for tools.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.md"
HEADING = re.compile(r"^## (?P<title>.+?)(?: \(\d{4}-\d{2}-\d{2}\))?\s*$")


def record(text: str, name: str, figures=None) -> Path:
    """Put ``text`` (a section starting with its ``## TITLE (DATE)`` line) into results.md in place of the section of
    the same title, and ``figures`` (any JSON-able value; default: the text) into ``results/NAME.json``."""
    text = text.strip("\n")
    title = _title(text.splitlines()[0])
    if title is None:
        raise ValueError(f"a results section starts with '## TITLE (DATE)', not {text.splitlines()[0]!r}")
    document = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    sections = re.split(r"(?m)^(?=## )", document)
    replaced = False
    for n, section in enumerate(sections):
        if _title(section.splitlines()[0] if section else "") == title:
            sections[n] = text + "\n\n" if not replaced else ""
            replaced = True
    if not replaced:
        sections.append(text + "\n\n")
    sections[0] = sections[0].rstrip("\n") + "\n\n"
    RESULTS.write_text("".join(sections).rstrip("\n") + "\n")
    target = HERE / "results" / f"{name}.json"
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps({"section": title, "figures": figures if figures is not None else text}, indent=1, default=str))
    print(text)
    print(f"results.md: section {title!r} {'replaced' if replaced else 'added'}; figures in {target.relative_to(HERE.parent)}")
    return target


def _title(line: str) -> str | None:
    found = HEADING.match(line.strip())
    return found.group("title") if found else None

"""Commit and roll back: every change of an index writes new files, flushes them, and only then swaps ``index.json``.

A kill -9 at any moment leaves the previous complete index readable; an error removes what the change wrote;
the next run removes files no manifest names (:func:`remove_orphans`).
"""

from __future__ import annotations

import json
from pathlib import Path

from rscbir import atomic
from rscbir.index.layout import DATA_FILE, MANIFEST, file_records
from rscbir.index.manifest import Manifest


class Generation:
    """One change of the index at ``path``: the files it writes (:meth:`add`) and the manifest swap that commits
    them (:meth:`commit`). Used as a context manager: anything raised before the commit removes the files added,
    so a failed append, removal or compaction leaves only the ``previous`` generation; after the commit the
    files only ``previous`` named are removed.
    """

    def __init__(self, path: Path, previous: Manifest | None) -> None:
        self.path = Path(path)
        self.previous = previous
        self.written: list[Path] = []
        self.committed: Manifest | None = None

    def __enter__(self) -> "Generation":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            for file in self.written:
                file.unlink(missing_ok=True)
            return
        if self.committed is not None and self.previous is not None:
            for name in set(self.previous.data_files()) - set(self.committed.data_files()):
                (self.path / name).unlink(missing_ok=True)

    def add(self, *names: str) -> None:
        """Record files (names in the index folder) this change writes."""
        self.written += [self.path / name for name in names]

    def commit(self, manifest: Manifest) -> Manifest:
        """Flush the new files, record every data file's size and checksum, then swap the manifest (the commit).

        Files kept from the previous generation keep their recorded checksums (they are immutable): only new files
        are hashed. Returns the manifest as written.
        """
        for file in self.written:
            atomic.fsync_path(file)
        previous = self.previous.checksums if self.previous is not None else {}
        fresh = {p.name for p in self.written}
        names = manifest.data_files()
        known = {name: previous[name] for name in names if name in previous and name not in fresh}
        manifest = manifest.replace(checksums={**known, **file_records(self.path, [n for n in names if n not in known])})
        with atomic.atomic_path(self.path / MANIFEST) as tmp:
            tmp.write_text(json.dumps(manifest.to_dict(), indent=2))
        atomic.settle_folder(self.path)
        self.committed = manifest
        return manifest


def remove_orphans(path: Path, manifest: Manifest) -> list[str]:
    """Data files the manifest does not name (a run killed after writing, before its manifest swap): never read, removed."""
    named = set(manifest.data_files())
    orphans = [p for p in Path(path).iterdir() if p.is_file() and DATA_FILE.match(p.name) and p.name not in named]
    for orphan in orphans:
        orphan.unlink(missing_ok=True)
    return [p.name for p in orphans]


__all__ = ["Generation", "remove_orphans"]

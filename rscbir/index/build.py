"""Building and appending: scenes embedded into ``.staging/`` (resumable), then one new segment committed.

An append embeds the new scenes into one new segment and swaps ``index.json``; it never rewrites an
existing segment. A different model, weights, bands or tiling than the index was built with is refused
(:meth:`IndexSettings.diff`). The next run reuses every scene already embedded into ``.staging/``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from rscbir.defaults import DEFAULT_AUGMENT
from rscbir.errors import IndexFileError, InvalidSceneError, ModelMismatchError
from rscbir.grid import Grid, common_grid
from rscbir.index.commit import Generation, remove_orphans
from rscbir.index.distributed import write_generation_on
from rscbir.index.faiss_types import write_faiss
from rscbir.index.generation import index_factory, index_pca, next_manifest, place_whitening, shared_files
from rscbir.index.layout import MANIFEST, STAGING, segment_names
from rscbir.index.maintain import MAX_SEGMENTS, compact_index
from rscbir.index.manifest import IndexSettings, SegmentRecord
from rscbir.index.reader import Index
from rscbir.index.rows import joined
from rscbir.index.writers import StagedScene, acquisition_means, segment_faiss, write_augmented, write_vectors_and_catalog
from rscbir.models.config import ModelConfig
from rscbir.scene import Scene
from rscbir.store import EmbeddingStore, EmbedOptions
from rscbir.tiling import TilingConfig, aligned_grid

if TYPE_CHECKING:  # reading an index needs no deep-learning framework: the model code loads only to embed
    from rscbir.embed import Runner
    from rscbir.models.features import FeatureModel

log = logging.getLogger(__name__)


@dataclass
class BuildSummary:
    """What one build or append did, scene by scene."""

    added: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already indexed with the same content
    reused: list[str] = field(default_factory=list)  # resumed from embeddings a killed run had staged
    failed: list[dict] = field(default_factory=list)  # {"scene", "error"}: unreadable, skipped
    compacted: int = 0  # segments merged because the append passed MAX_SEGMENTS


def index_settings(config: ModelConfig, tiling: TilingConfig, options: EmbedOptions, index_type: str = "auto",
                   augment: int = DEFAULT_AUGMENT, centre_scenes: bool = True) -> IndexSettings:  # fmt: skip
    """The settings an index built with these options records."""
    return IndexSettings(config.fingerprint(), tiling.to_dict(), options.dim, options.whiten, int(augment), bool(centre_scenes),
                         index_type, options.dtype.value)  # fmt: skip


def build_index(
    path: str | os.PathLike,
    scenes: Sequence[Scene],
    model: FeatureModel,
    tiling: TilingConfig = TilingConfig(),
    *,
    align: bool = False,
    options: EmbedOptions = EmbedOptions(),
    index_type: str = "auto",
    runner: Runner | None = None,
    augment: int = DEFAULT_AUGMENT,
    centre_scenes: bool = True,
    search: bool = True,
) -> tuple[Index, BuildSummary]:
    """Create ``path`` or append ``scenes`` to it; returns the index and a :class:`BuildSummary`.

    Scenes already present (same id and content hash) are skipped. A different
    model, weights, bands or tiling than the index was built with is refused.
    A scene that cannot be read (corrupt, truncated) is reported in
    ``summary.failed`` and skipped; the others are indexed. ``runner`` runs
    the model (default in this process; :class:`rscbir.scale.DaskRunner` on a cluster).
    ``augment`` k > 0 stores database-side augmented vectors for search
    (:func:`rscbir.rerank.augment_database`); an append augments only the new
    patches, with neighbours among every patch. ``centre_scenes`` (default) takes
    each date's mean vector off (after PCA): what a whole date shares (light,
    season, sensor) goes; an aligned index created from 2+ dates also divides
    out what varies between dates at the same place (:class:`PlaceWhitening`),
    so a search ranks ground, not acquisition (OSCD, the same unchanged place
    first across dates: 0.606 with neither, 0.961 with both and grid pooling).
    ``search=False`` returns the index opened without its FAISS files, for a
    caller that only reports on it (an HNSW graph is read whole: ~0.8 KB a patch).
    """
    path = Path(path)
    settings = index_settings(model.config, tiling, options, index_type, augment, centre_scenes)
    client = getattr(runner, "client", None)  # a Dask cluster embeds the scenes and writes the segments too
    existing = _open_for_append(path, search=client is None)  # on a cluster the workers search the old segments
    if existing is not None:
        check_compatible(path, existing.settings, settings)
    created = not path.exists()
    path.mkdir(exist_ok=True)  # the parent must exist, as for every other output
    staging = path / STAGING
    _remove_stale_temporaries(staging)
    if existing is not None:
        remove_orphans(path, existing.manifest)
    summary = BuildSummary()
    try:
        grid = _index_grid(existing, scenes) if align else None
        staged = _stage_scenes(path, existing, scenes, model, tiling, options, grid, runner, summary)
        if not staged:
            if existing is None:
                reasons = "; ".join(f["error"] for f in summary.failed) or "no scene given"
                raise IndexFileError(f"no scene could be indexed, nothing was written: {reasons}")
            shutil.rmtree(staging, ignore_errors=True)
            return (Index.open(path) if client is not None and search else existing), summary
        if client is not None:
            index = write_generation_on(client, path, existing, staged, settings, model.config, grid, search=search)
        else:
            index = write_generation(path, existing, staged, settings, model.config, grid, search=search)
    except Exception:
        # An error (not an interruption: Ctrl-C and kill keep .staging so the next run resumes) leaves nothing
        # behind: a folder this run created is removed, else the stages this run wrote.
        if created:
            shutil.rmtree(path, ignore_errors=True)
        else:
            for name in summary.added:
                for stage in staging.glob(f"{name}-*"):
                    shutil.rmtree(stage, ignore_errors=True)
            _remove_if_empty(staging)
        raise
    # every stage is now in the index; whatever else .staging holds is left from killed runs of other scenes
    shutil.rmtree(staging, ignore_errors=True)
    if len(index.segments) > MAX_SEGMENTS:
        index, summary.compacted = compact_index(path)
    return index, summary


def check_compatible(path: Path, before: IndexSettings, now: IndexSettings) -> None:
    """Refuse an append whose vectors would not be comparable with the index's (the message names what differs)."""
    differ = list(before.diff(now))
    if differ:
        raise ModelMismatchError(
            f"{path} was built with another {' and '.join(differ)} ({before.describe_diff(now)}); use the same --model/--weights/"
            "--preset/--patch-size/--dim/--augment/--centre-scenes options, or index into a new folder"
        )


def scene_content_hash(scene: Scene) -> str:
    """BLAKE2b of the scene's files (names and bytes) and band selection."""
    digest = hashlib.blake2b(digest_size=16)
    for path in scene.paths:
        digest.update(Path(path).name.encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
    digest.update(",".join(scene.band_names).encode())
    return digest.hexdigest()


def _stage_key(config: ModelConfig, tiling: TilingConfig, options: EmbedOptions, grid: Grid | None) -> str:
    """What a staged store depends on besides the scene: model, tiling, dtype and grid (so a resume never mixes them)."""
    text = json.dumps([config.fingerprint(), tiling.to_dict(), options.dtype.value], sort_keys=True)
    model_key = hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
    if grid is None:
        return f"{model_key}-native"
    text = f"{grid.crs.to_wkt()}|{tuple(grid.transform)[:6]}|{grid.width}x{grid.height}"
    return f"{model_key}-{hashlib.blake2b(text.encode(), digest_size=6).hexdigest()}"


def _remove_stale_temporaries(staging: Path) -> None:
    """Half-written stage folders (``.name.xxxx``, from a killed run) can never be resumed: remove them."""
    if staging.is_dir():
        for entry in staging.iterdir():
            if entry.name.startswith("."):
                shutil.rmtree(entry, ignore_errors=True)


def _remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _open_for_append(path: Path, search: bool = True) -> Index | None:
    """The index already at ``path`` (None for a new or empty folder); refuses other folders."""
    if path.exists() and not path.is_dir():
        raise IndexFileError(f"{path}: exists and is not a folder")
    if (path / MANIFEST).exists():
        return Index.open(path, search=search)
    if path.exists() and any(p for p in path.iterdir() if p.name != STAGING):
        raise IndexFileError(f"{path}: folder exists and holds no rscbir index; choose an empty or new folder")
    return None


def _index_grid(existing: Index | None, scenes: Sequence[Scene]) -> Grid:
    """An aligned index keeps one grid for ever, so (row, col) means the same ground in every date."""
    grid = existing.grid if existing is not None else None
    if grid is None:
        return aligned_grid(scenes)
    for scene in scenes:
        common_grid([grid, scene.grid], ["the index grid", scene.location])
    return grid


def _stage_scenes(path: Path, existing: Index | None, scenes: Sequence[Scene], model: FeatureModel, tiling: TilingConfig,
                  options: EmbedOptions, grid: Grid | None, runner: Runner | None, summary: BuildSummary) -> list[StagedScene]:  # fmt: skip
    """Embed each new scene into ``.staging/`` (reusing what a killed run staged); fills ``summary``."""
    staging = path / STAGING
    staging.mkdir(exist_ok=True)
    known = {s.scene_id: s for s in (existing.manifest.scenes if existing else ())}
    key = _stage_key(model.config, tiling, options, grid)
    staged = []
    for scene in scenes:
        try:
            digest = scene_content_hash(scene)
        except OSError as exc:
            summary.failed.append({"scene": scene.location, "error": str(exc)})
            continue
        if scene.scene_id in known:
            if known[scene.scene_id].content_hash == digest:
                log.info("%s: already indexed, skipped", scene.scene_id)
                summary.skipped.append(scene.scene_id)
                continue
            raise IndexFileError(
                f"{scene.location}: scene id {scene.scene_id!r} is already in {path} with other content; "
                "rename the file or index into a new folder"
            )
        stage = staging / f"{scene.scene_id}-{digest[:16]}-{key}"
        if (stage / "model.json").is_file():
            store = EmbeddingStore.open(stage)
            log.info("%s: reusing embeddings staged by an earlier run", scene.scene_id)
            summary.reused.append(scene.scene_id)
        else:
            try:
                # staged raw: the index fits one PCA over every new scene (or applies its recorded one)
                raw = dataclasses.replace(options, dim=None)
                from rscbir.embed import embed_scenes  # torch loads here, only when there is something to embed

                store = embed_scenes([scene], stage, model, tiling, options=raw, grid=grid, runner=runner)
            except InvalidSceneError as exc:
                log.warning("%s: skipped: %s", scene.scene_id, exc)
                summary.failed.append({"scene": scene.location, "error": str(exc)})
                continue
        record = {**store.meta["scenes"][0], "content_hash": digest, "patches": len(store.vectors)}
        staged.append(StagedScene(record, store, stage))
        summary.added.append(scene.scene_id)
    return staged


def write_generation(path: Path, existing: Index | None, staged: Sequence[StagedScene], settings: IndexSettings, config: ModelConfig,
                     grid: Grid | None, search: bool = True) -> Index:  # fmt: skip
    """Add one segment (catalog, vectors, FAISS) for the ``staged`` scenes, then commit the new manifest.

    The existing segments' files are neither rewritten nor copied: an append writes what it adds.
    """
    old = existing.manifest if existing is not None else None
    generation = old.generation + 1 if old is not None else 1
    old_count = len(existing) if existing is not None else 0
    pca = index_pca(existing, staged, settings)
    segment_id = old.next_segment_id() if old is not None else 1
    names = segment_names(segment_id, bool(settings.augment))
    with Generation(path, old) as change:
        change.add(*names.values())
        means = acquisition_means(staged, pca) if settings.centre_scenes else None
        places = place_whitening(existing, staged, pca, means, grid)
        vectors, lookup = write_vectors_and_catalog(path, names, staged, np.dtype(settings.dtype), pca, means, places)
        total = old_count + len(vectors)
        factory, requested = index_factory(old, settings, total)
        searched = vectors
        if settings.augment:
            everything = joined([*(s.vectors for s in existing.segments), vectors] if existing else [vectors])
            searched = write_augmented(path / names["augmented"], everything, old_count, settings.augment, existing)
        shared = shared_files(change, old.files if old is not None else {}, generation, pca, places)
        sample = joined([*(s.search_vectors for s in existing.segments), searched]) if existing else searched
        index, trained = segment_faiss(change, searched, factory, old.trained if old is not None else None, generation, training=sample)
        write_faiss(index, path / names["faiss"])
        segment = SegmentRecord(segment_id, len(vectors), tuple(s.record["scene_id"] for s in staged), factory, names, lookup)
        change.commit(next_manifest(old, settings, config, grid, staged, [segment], shared, trained, requested, pca))
    return Index.open(path, search=search)


__all__ = ["BuildSummary", "DEFAULT_AUGMENT", "build_index", "check_compatible", "index_settings", "scene_content_hash",
           "write_generation"]

"""What a new generation of an index shares, whoever writes its segments (this process or Dask workers): the PCA,
the within-place whitening, the FAISS type, the shared files and the next manifest."""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np

from rscbir.defaults import PLACE_SHRINK
from rscbir.grid import Grid
from rscbir.index.commit import Generation
from rscbir.index.faiss_types import auto_index_type
from rscbir.index.manifest import IndexSettings, Manifest, SceneRecord, SegmentRecord
from rscbir.index.reader import Index
from rscbir.index.writers import StagedScene, place_deviations
from rscbir.models.config import ModelConfig
from rscbir.models.whitening import Moments, PCAWhitening, PlaceWhitening

log = logging.getLogger(__name__)


PCA_SAMPLE = 200_000  # vectors a new index fits its PCA on (a spread of rows of every scene)


def pca_sample(staged: Sequence[StagedScene]) -> list[np.ndarray]:
    """The rows of each staged scene the PCA is fitted on: all of them up to ``PCA_SAMPLE`` in all, else the same
    share of every scene (seeded, sorted)."""
    sizes = [len(s.store.vectors) for s in staged]
    rng = np.random.default_rng(0)
    share = min(1.0, PCA_SAMPLE / sum(sizes))
    return [np.sort(rng.permutation(n)[: max(1, int(n * share))]) for n in sizes]


def index_pca(existing: Index | None, staged: Sequence[StagedScene], settings: IndexSettings,
              moments: Callable[[list[np.ndarray]], Moments] | None = None) -> PCAWhitening | None:  # fmt: skip
    """The PCA the new vectors go through: the index's own, or one fitted now on the first scenes.

    With at least as many sampled vectors as dimensions the covariance is summed a block of rows at a time
    (:class:`Moments`; ``moments(rows)`` sums it elsewhere, on Dask workers), so no copy of the sample is held;
    with fewer, the sample is decomposed whole (it is small). A PCA needs more vectors than dimensions; with fewer
    the index keeps full vectors (and says so).
    """
    if existing is not None:
        return existing.pca
    if not settings.dim:
        return None
    total = sum(len(s.store.vectors) for s in staged)
    if total <= settings.dim:
        log.warning("only %d patches: too few to fit a %d-d PCA; the index keeps %d-d vectors",
                    total, settings.dim, staged[0].store.vectors.shape[1])  # fmt: skip
        return None
    rows = pca_sample(staged)
    if moments is not None and sum(map(len, rows)) >= staged[0].store.vectors.shape[1]:
        return PCAWhitening.from_moments(moments(rows), settings.dim, settings.whiten)
    return PCAWhitening.fit_rows([(s.store.vectors, r) for s, r in zip(staged, rows)], settings.dim, settings.whiten)


def place_whitening(existing: Index | None, staged: Sequence[StagedScene], pca: PCAWhitening | None,
                     means: dict | None, grid: Grid | None) -> PlaceWhitening | None:  # fmt: skip
    """The within-place whitening of an aligned index of 2+ acquisitions: the index's own (fitted when it was
    created; appends keep it so every segment stays comparable), or one fitted now. None without dates centred, without
    a common grid (places cannot be paired) or with one acquisition."""
    if existing is not None:
        return existing.places
    if means is None or grid is None or len(means) < 2:
        return None
    deviations, seen = place_deviations(staged, pca, means)
    if len(deviations) and float(np.mean(deviations**2)) < 1e-8:
        return None  # every place looks the same on every date: nothing to whiten
    if seen < deviations.shape[1]:  # fewer places than dimensions: the covariance would be mostly noise
        log.info("%d places seen on 2+ dates, fewer than the %d dimensions: no within-place whitening", seen, deviations.shape[1])
        return None
    return PlaceWhitening.fit(deviations, PLACE_SHRINK)


def index_factory(old: Manifest | None, settings: IndexSettings, total: int) -> tuple[str, str]:
    """The FAISS type of a new segment for an index of ``total`` vectors, and the type asked for (``auto`` follows the size)."""
    requested = old.index_type_requested if (old is not None and settings.index_type == "auto") else settings.index_type
    factory = auto_index_type(total) if requested == "auto" else requested
    trained = old.trained if old is not None else None
    if requested == "auto" and "IVF" in factory and trained is not None and "IVF" in trained.factory:
        factory = trained.factory  # keep the one trained quantizer until a compaction retrains it
    return factory, requested


def shared_files(change: Generation, files: dict, generation: int, pca: PCAWhitening | None = None,
                 places: PlaceWhitening | None = None) -> dict:  # fmt: skip
    """The files every segment shares (PCA, within-place whitening): ``files`` (the index's own) with those it lacks
    written now, as part of ``change``."""
    shared = dict(files)
    for key, transform in (("pca", pca), ("places", places)):
        if transform is not None and key not in shared:
            shared[key] = f"{key}-{generation:06d}.npz"
            change.add(shared[key])
            transform.save(change.path / shared[key])
    return shared


def next_manifest(old: Manifest | None, settings: IndexSettings, config: ModelConfig, grid: Grid | None, staged: Sequence[StagedScene],
                  segments: Sequence[SegmentRecord], shared: dict, trained, requested: str, pca: PCAWhitening | None) -> Manifest:  # fmt: skip
    """The manifest of the index with the new ``segments`` (of the ``staged`` scenes) after the old ones."""
    factory = segments[-1].index_type
    return Manifest(
        generation=old.generation + 1 if old is not None else 1,
        count=(old.count if old is not None else 0) + sum(s.count for s in segments),
        dim=pca.dim if pca is not None else (old.dim if old is not None else staged[0].store.vectors.shape[1]),
        dtype=settings.dtype,
        index_type=factory,
        index_type_requested=requested,
        model=config.to_dict(),
        pca_dim=pca.dim if pca is not None else None,
        pca_requested=old.pca_requested if old is not None else settings.dim,
        whiten=settings.whiten,
        augment=int(settings.augment),
        centre_scenes=bool(settings.centre_scenes),
        tiling=settings.tiling,
        grid=grid.to_dict() if grid is not None else (old.grid if old is not None else None),
        scenes=(old.scenes if old is not None else ()) + tuple(SceneRecord.from_dict(s.record) for s in staged),
        segments=(old.segments if old is not None else ()) + tuple(segments),
        files=shared,
        trained_type=old.trained_type if old is not None else None,
    ).with_trained(trained)


__all__ = ["PCA_SAMPLE", "index_factory", "index_pca", "next_manifest", "pca_sample", "place_whitening", "shared_files"]

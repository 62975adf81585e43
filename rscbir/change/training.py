"""Change models from labelled pairs (``rscbir finetune-change``): each pair's per-pixel evidence (cached, as
``rscbir change --marks`` caches it) with its change mask, and the change head trained on them (torch)."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Callable, Sequence

from rscbir.change.evidence import PairEvidence, default_cache, scene_evidence
from rscbir.change.head import ChangeHead, HeadTraining, train_change_head
from rscbir.datasets.change_sets import LabelledPair, labelled_pairs
from rscbir.errors import LabelError
from rscbir.models.options import ModelOptions
from rscbir.presets import SceneOptions
from rscbir.tiling import TilingConfig

if TYPE_CHECKING:
    from rscbir.models.features import FeatureModel


def labelled_evidence(pair: LabelledPair, tiling: TilingConfig, model_options: ModelOptions = ModelOptions(),
                      model: FeatureModel | None = None, cache: str | os.PathLike | None = None) -> tuple[PairEvidence, dict]:  # fmt: skip
    """The evidence of a labelled pair and what it was made with, read as ``rscbir change BEFORE AFTER`` reads it."""
    evidence, meta = scene_evidence(pair.before, pair.after, tiling, model_options, pair.preset, pair.named_bands, model, cache)
    if evidence.grid.shape != pair.truth.shape:
        raise LabelError(f"{pair.name}: the change mask ({pair.truth.shape}) does not cover the pair's grid ({evidence.grid.shape})")
    return evidence, meta


def finetune_change(root: str | os.PathLike, names: Sequence[str] | None = None, scene_options: SceneOptions = SceneOptions(),
                    tiling: TilingConfig = TilingConfig(32), model_options: ModelOptions = ModelOptions(),
                    training: HeadTraining = HeadTraining(), cache: str | os.PathLike | None = "default",
                    progress: Callable[[str], None] | None = None) -> ChangeHead:  # fmt: skip
    """A change head trained on the labelled pairs of ``root`` (OSCD cities or ``A/ B/ label/`` pairs; ``names``
    chooses some). The backbone stays the pretrained one; its evidence of each pair is cached (``cache``: a folder,
    ``"default"`` for :func:`default_cache`, None for none), so training again with other settings skips the CNN."""
    cache = default_cache() if cache == "default" else cache
    pairs, meta, used = [], None, []
    for pair in labelled_pairs(root, names, scene_options):
        start = time.perf_counter()
        evidence, made_with = labelled_evidence(pair, tiling, model_options, cache=cache)
        if meta is not None and made_with != meta:
            raise LabelError(f"{pair.name}: read with other bands or scaling than the pairs before it; train on pairs read alike")
        meta = made_with
        pairs.append((evidence, pair.truth & evidence.valid))
        used.append(pair.name)
        if progress:
            progress(f"{pair.name}: evidence {evidence.channels.shape[0]} channels x {int(evidence.valid.sum())} pixels, "
                     f"{pair.truth.mean():.1%} changed ({time.perf_counter() - start:.1f} s)")  # fmt: skip
    if not any(truth.any() for _, truth in pairs):
        raise LabelError(f"{root}: no changed pixel in the labels of {', '.join(used)}: nothing to learn change from")
    return train_change_head(pairs, {**meta, "pairs": used, "source": str(root)}, training, progress)


__all__ = ["finetune_change", "labelled_evidence"]

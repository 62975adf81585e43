"""What changed between two dates: per-patch change scores, thresholds, polygons, score rasters.

Both dates are read onto one common grid, so patch (row, col) is the same
ground in each. Every co-located patch pair gets a change score:

``cosine``
    1 - cosine similarity of the final CNN embeddings (ImageNet features of the
    RGB bands, average-pooled, as the index stores them).
``multilayer``
    The mean of 1 - cosine over the pooled outputs of every CNN stage, from
    the stem to the last block: early stages see colour and texture, late ones
    objects, in the spirit of Deep Change Vector Analysis (Saha et al. 2019).
``dense``
    Deep Change Vector Analysis proper: 1 - cosine between the two dates'
    feature vectors *at each location* of every stage's feature map, averaged
    over locations and stages. Unlike pooled vectors, a change covering a few
    percent of the patch is not averaged away before the comparison.
``cva``
    Classic change vector analysis: per-pixel length of the difference of the
    bands, each standardised per scene (z-score), averaged over the patch.
``fusion`` (default)
    The mean of the robust z-scores (median / MAD within the pair) of
    ``dense`` and ``cva``: CNN and spectral evidence on one scale, with no
    weight fitted to labels. Robust z-scores keep the heavy tail where rare
    change lives (percentile ranks would flatten it and mislead Otsu).

Changed patches are those above a threshold chosen without labels
(:mod:`rscbir.thresholds`); :func:`changed_areas` dissolves them into polygons.
Writers (score GeoTIFF, preview PNG, GeoJSON) live in :mod:`rscbir.export`;
"where else did the same change happen" is :func:`rscbir.query.query_change`.

* :mod:`rscbir.change.pairs` - co-located patch pairs of two scenes, and of two dates of an index (their distance)
* :mod:`rscbir.change.radiometry` - relative radiometric normalisation between the dates
* :mod:`rscbir.change.cnn` - CNN feature-map distances (the only module that needs torch)
* :mod:`rscbir.change.scores` - per-patch and per-pixel scores of every method
* :mod:`rscbir.change.areas` - changed areas from patches or from a pixel mask
* :mod:`rscbir.change.detection` - label-free cuts and the one-call API (:func:`detect`, :func:`change_map`)
* :mod:`rscbir.change.streamed` - the same pixel map made in strips of rows, in flat memory at any scene size
* :mod:`rscbir.change.evidence` - per-pixel evidence of a pair, cached (what marks and change models read)
* :mod:`rscbir.change.marks` - marks from vector files: each answers for its place, then corrects in evidence space
* :mod:`rscbir.change.clicks` - clicks simulated from a label (to measure marks as users make them)
* :mod:`rscbir.change.head` - the change model learnt from labelled pairs (torch) and its checkpoint
* :mod:`rscbir.change.training` - labelled pairs -> evidence -> change model (``rscbir finetune-change``)
* :mod:`rscbir.change.series` - change through every date of an index: when did each place change
* :mod:`rscbir.change.taught` - change maps taught by a change model and/or marks (pixel and patch level)

The names below load their module on first use: cosine change from an index imports no torch.
"""

from __future__ import annotations

from rscbir.lazy import lazy_exports

from rscbir.modes import ChangeMethod

_HOMES = {
    "PairBatch": "pairs", "paired_patches": "pairs", "cosine_distance": "pairs", "IndexedPair": "pairs", "indexed_pair": "pairs",
    "band_moments": "radiometry", "invariant_regression": "radiometry", "radiometric_match": "radiometry",
    "cnn_distances": "cnn",
    "ChangeScores": "scores", "PixelMosaic": "scores", "robust_z": "scores", "score_change": "scores", "score_scenes": "scores",
    "scores_from_index": "scores",
    "AREA_PERCENTILE": "areas", "AREA_SCORE": "areas", "PixelRegularisation": "areas", "area_scores": "areas",
    "changed_areas": "areas", "changed_regions": "areas", "pixel_change_mask": "areas",
    "ChangeMap": "detection", "PATCH_THRESHOLD": "detection", "PIXEL_THRESHOLD": "detection", "change_map": "detection", "detect": "detection",
    "detect_in_index": "detection", "flag_changes": "detection",
    "SeriesChange": "series", "place_history": "series", "series_change": "series",
    "PIXEL_METHODS": "streamed", "PixelView": "streamed", "stream_change": "streamed",
    "teach": "taught", "taught_change_map": "taught", "taught_patch_map": "taught",
}  # fmt: skip


__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals())


__all__ = sorted([*_HOMES, "ChangeMethod"])

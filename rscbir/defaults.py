"""Defaults that the library and the CLI share, in one light module (standard library only: ``--help`` stays fast).

Each value was chosen on the design half of a real data set; the figures are in ``benchmarks/results.md``.
"""

# Centred PCA to 128-d fitted on the corpus: RSSCN7 mAP 0.511 -> 0.532 on the design half, and vectors 15x shorter
# than the 1904-d multi-stage features.
DEFAULT_DIM = 128
# Database-side augmentation with each patch's 5 nearest (chosen among 3, 5, 10 on the design half of RSSCN7):
# with query expansion, mAP 0.569 -> 0.610 on all of RSSCN7.
DEFAULT_AUGMENT = 5
# Mid-level features: the last four stage outputs of EfficientNet-Lite0 (112, 192, 320 and 1280 channels) pooled
# and concatenated lift RSSCN7 mAP from 0.447 to 0.496 on the design half.
DEFAULT_STAGES = 4
DEFAULT_INPUT_SIZE = 224  # pixels per side a patch is resized to before the CNN
DEFAULT_WHITEN = 0.0  # whitening power of the PCA: 0 centred PCA, 0.5 full whitening
# Patch vectors for search keep where things lie in the patch: each stage's map averaged over its 2 x 2 quarters.
# The same unchanged OSCD place ranks first across dates for 0.864 of places (0.678 with plain averages, both with
# dates centred) and RSSCN7 mAP stays 0.610. Change between two scenes keeps plain averages (measured with them).
DEFAULT_POOLING = "grid"
CHANGE_POOLING = "avg"
# Within-place whitening of an aligned index of 2+ dates: what varies between dates at the same place is divided
# out, shrunk toward the identity by this share of its mean variance (chosen on the OSCD design cities, 0.03-3).
PLACE_SHRINK = 0.1

__all__ = ["CHANGE_POOLING", "DEFAULT_AUGMENT", "DEFAULT_DIM", "DEFAULT_INPUT_SIZE", "DEFAULT_POOLING", "DEFAULT_STAGES",
           "DEFAULT_WHITEN", "PLACE_SHRINK"]

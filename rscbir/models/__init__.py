"""Pretrained backbones, feature heads and fine-tuning.

* :mod:`rscbir.models.backbones` - registry and weight loading
* :mod:`rscbir.models.features` - band mapping, pooling, L2 normalisation
* :mod:`rscbir.models.whitening` - PCA-whitening to a shorter vector
* :mod:`rscbir.models.finetune` - your own FC head, supervised or self-supervised
"""

from rscbir.models.backbones import BACKBONES, DEFAULT_BACKBONE, load_backbone
from rscbir.models.features import FeatureModel, InputSpec, Pooling, resolve_input

__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "FeatureModel", "InputSpec", "Pooling", "load_backbone", "resolve_input"]

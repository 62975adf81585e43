"""Pretrained backbones, feature heads and fine-tuning.

* :mod:`rscbir.models.config` - ModelConfig: what decides how a patch becomes a vector (no torch)
* :mod:`rscbir.models.backbones` - registry and weight loading (real files only)
* :mod:`rscbir.models.features` - band mapping, pooling, L2 normalisation, per-stage feature maps
* :mod:`rscbir.models.whitening` - PCA to a shorter vector
* :mod:`rscbir.models.checkpoint` - fine-tuned checkpoints (save / read)
* :mod:`rscbir.models.load` - a feature model from options, a checkpoint or a recorded config
* :mod:`rscbir.models.runtime` - PyTorch or ONNX Runtime, CPU or CUDA
* :mod:`rscbir.models.finetune` - your own FC head, supervised or self-supervised
"""

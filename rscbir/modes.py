"""Modes users choose by name: the enums shared by the library and the CLI.

They live here, apart from the code that acts on them, so the command line can
offer them as choices without importing torch (as torchgeo keeps its sampler
units in ``samplers/constants.py``).
"""

from __future__ import annotations

import enum


class Runtime(str, enum.Enum):
    """Where the forward pass runs on the CPU."""

    AUTO = "auto"  # onnx when onnxruntime is installed, else torch
    TORCH = "torch"
    ONNX = "onnx"


class Device(str, enum.Enum):
    """Which processor runs the CNN."""

    AUTO = "auto"  # cuda when torch sees a GPU, else cpu
    CPU = "cpu"
    CUDA = "cuda"


class VectorDtype(str, enum.Enum):
    """How vectors are stored on disk."""

    FLOAT16 = "float16"  # half the bytes; cosine scores differ by < 1e-3
    FLOAT32 = "float32"


class Pooling(str, enum.Enum):
    """Global pooling of the last feature map."""

    AVG = "avg"
    GEM = "gem"  # generalised mean, p = 3 (Radenovic et al. 2018)
    GRID = "grid"  # average over each quarter (2 x 2): keeps the layout, 4x the channels; finds the same ground across dates


class ChangeMethod(str, enum.Enum):
    """Change scores of co-located patches (see :mod:`rscbir.change`)."""

    FUSION = "fusion"
    DENSE = "dense"
    MULTILAYER = "multilayer"
    COSINE = "cosine"
    CVA = "cva"


# The score of a change map taught by marks or by a labelled-pair change model (not a label-free method).
TAUGHT = "taught"


def score_name(method: ChangeMethod | str) -> str:
    """The key of a change score: a label-free method's name, or ``taught`` (marks, change model)."""
    return method.value if isinstance(method, ChangeMethod) else (method if method == TAUGHT else ChangeMethod(method).value)


def choices(mode: type[enum.Enum]) -> list[str]:
    """The values of an enum, for ``click.Choice``."""
    return [m.value for m in mode]

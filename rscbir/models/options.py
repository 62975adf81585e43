"""Which feature model to build: the options the CLI, the API and every loader share (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass
from rscbir.defaults import DEFAULT_INPUT_SIZE, DEFAULT_STAGES
from rscbir.modes import Device, Pooling, Runtime


@dataclass(frozen=True)
class ModelOptions:
    """Which model to build (the CLI's model options); ``runtime``/``device`` say where it runs."""

    backbone: str | None = None
    weights: str | None = None  # a state dict for ``backbone`` or an ``rscbir finetune`` checkpoint
    all_bands: bool = False
    pooling: Pooling = Pooling.AVG
    input_size: int | None = DEFAULT_INPUT_SIZE  # 0 or None: keep the patch size
    runtime: Runtime = Runtime.AUTO
    device: Device = Device.AUTO
    stages: int = DEFAULT_STAGES
    views: int = 1


__all__ = ["ModelOptions"]

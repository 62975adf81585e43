"""ONNX Runtime sessions, made one way for every graph rscbir runs (no torch here)."""

from __future__ import annotations

import os
from pathlib import Path


def onnxruntime_available() -> bool:
    """Whether ONNX Runtime can be imported."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def ort_session(path: str | os.PathLike, threads: int | None = None):
    """A CPU inference session on the graph at ``path`` with ``threads`` intra-op threads (default: every core),
    quiet below errors."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(Path(path)), options, providers=["CPUExecutionProvider"])


__all__ = ["onnxruntime_available", "ort_session"]

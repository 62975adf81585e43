"""Where rscbir keeps what it can recompute (pair evidence, image pairs written as GeoTIFFs):
``$RSCBIR_CACHE`` or ``$XDG_CACHE_HOME/rscbir`` (``~/.cache/rscbir``). Deleting it loses nothing but time."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The rscbir cache folder (not created here)."""
    root = os.environ.get("RSCBIR_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "rscbir")
    return Path(root)


__all__ = ["cache_root"]

"""rscbir: content-based image retrieval and change retrieval for remote sensing.

The data flow is raster -> tiles -> embeddings -> index -> query / change -> GeoJSON,
one module per step: :mod:`rscbir.scene`, :mod:`rscbir.grid`, :mod:`rscbir.tiling`,
:mod:`rscbir.catalog`.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

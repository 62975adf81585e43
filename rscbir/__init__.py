"""rscbir: content-based image retrieval and change retrieval for remote sensing.

The data flow is raster -> tiles -> embeddings -> index -> query / change -> GeoJSON,
one module per step, each importing only the ones listed before it:

* :mod:`rscbir.errors` - the exception types users see
* :mod:`rscbir.atomic` - atomic file and folder writes
* :mod:`rscbir.defaults` - defaults the library and the CLI share
* :mod:`rscbir.modes` - enums users choose by name (runtime, device, dtype, pooling, change method)
* :mod:`rscbir.thresholds` - label-free change thresholds
* :mod:`rscbir.metrics` - average precision, P@k, ROC AUC, F1
* :mod:`rscbir.rerank` - query expansion, database augmentation, relevance feedback
* :mod:`rscbir.grid` - grids of pixels and the common grid of several dates
* :mod:`rscbir.images` - plain image files and labelled image sets
* :mod:`rscbir.scene` - open a scene: bands, scaling, date, CRS
* :mod:`rscbir.presets` - band presets shipped with the package
* :mod:`rscbir.tiling` - patch layout and streaming patches
* :mod:`rscbir.catalog` - the patch table in EPSG:4326
* :mod:`rscbir.models` - backbones, feature model, PCA, checkpoints, runtimes, fine-tuning
* :mod:`rscbir.store` - the embedding store on disk (read without torch)
* :mod:`rscbir.embed` - patches to vectors in an embedding store
* :mod:`rscbir.scale` - the same embedding as Dask tasks
* :mod:`rscbir.index` - the index folder: typed manifest, segments, search, build, commit, maintenance
* :mod:`rscbir.change` - co-located pairs, radiometry, CNN evidence, scores, changed areas
* :mod:`rscbir.query` - queries by point, patch or image; change retrieval
* :mod:`rscbir.export` - GeoJSON, CSV, GeoTIFF, PNG and HTML writers
* :mod:`rscbir.evaluate` - retrieval and change quality against labels
* :mod:`rscbir.cli` - the ``rscbir`` command line
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

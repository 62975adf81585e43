"""Exceptions that users can cause.

Every error a user can trigger with bad input is an :class:`RscbirError`. Each
subclass also inherits the matching builtin so callers can catch either. The CLI
turns these into one line on stderr and exit code 2; anything else is a bug and
stays a traceback.
"""

from __future__ import annotations


class RscbirError(Exception):
    """Root of all rscbir user-facing errors."""


class InvalidSceneError(RscbirError, ValueError):
    """A file is not a readable raster (wrong format, truncated, corrupt)."""


class CRSError(RscbirError, ValueError):
    """A raster has no CRS or no geotransform, or CRSs cannot be reconciled."""


class NoOverlapError(RscbirError, ValueError):
    """Rasters that must cover the same ground do not overlap."""


class BandError(RscbirError, ValueError):
    """A requested band does not exist, or band files cannot be stacked."""


class TilingError(RscbirError, ValueError):
    """Tiling parameters do not fit the scene (e.g. patch larger than scene)."""


class OutputError(RscbirError, OSError):
    """An output path cannot be written (unknown format, missing folder)."""


class ModelError(RscbirError, ValueError):
    """Unknown backbone, or a model that does not fit the input (band count)."""


class WeightsError(RscbirError, FileNotFoundError):
    """Pretrained weights are missing, corrupt, or do not fit the architecture."""


class IndexFileError(RscbirError, ValueError):
    """An index folder is missing, empty, corrupt or cannot hold what was asked."""


class ModelMismatchError(RscbirError, ValueError):
    """An index was built with another model, weights, bands or tiling than this run."""


class QueryError(RscbirError, ValueError):
    """A query cannot be answered: point outside every scene, unknown date or scene."""


class OutsideCoverageError(QueryError):
    """A query point lies outside every indexed patch (of the asked date)."""


class DateError(RscbirError, ValueError):
    """A date cannot be read (``--date``, a file name, a TIFF tag, a query filter)."""


class ScalingError(RscbirError, ValueError):
    """A scaling rule (``--scale``) cannot be read."""


class PresetError(RscbirError, ValueError):
    """A band preset is unknown or its YAML is invalid."""


class ThresholdError(RscbirError, ValueError):
    """A change threshold rule (``--threshold``) cannot be read."""


class StoreError(RscbirError, ValueError):
    """An embedding store folder is missing, unreadable or inconsistent."""


class EmptyGridError(RscbirError, ValueError):
    """No valid (non-nodata) patch lies on the grid where one is needed."""


class SchedulerError(RscbirError, ConnectionError):
    """A Dask scheduler cannot be reached."""


class FeedbackError(RscbirError, ValueError):
    """Relevance feedback cannot be used: unknown patch ids, no positive, no label column."""


class LabelError(RscbirError, ValueError):
    """A labelled data set (change masks, class folders) does not fit what is evaluated."""


class PortError(RscbirError, OSError):
    """``rscbir serve`` cannot listen on the address and port asked for (busy, or not this machine's)."""


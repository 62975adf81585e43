"""The index manifest as typed, frozen values: parsed once from ``index.json``, older versions upgraded here only.

Standard library only, so describing an index (``rscbir info``) loads no numpy, FAISS or model code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from rscbir.models.config import ModelConfig

FORMAT = "rscbir-index"
VERSION = 2  # 2: segments; version-1 indexes (one generation of whole files) open as one segment
SEGMENT_KEYS = ("catalog", "vectors", "augmented", "faiss", "lookup", "cells")  # the files of one segment

# The settings an append must share with the index for its vectors to be comparable, in the order a refusal names them.
COMPARABLE = ("model", "tiling", "dim", "whiten", "augment", "centre_scenes")


@dataclass(frozen=True)
class IndexSettings:
    """How an index turns patches into searchable vectors: what an append must match (:meth:`diff`)."""

    model: dict  # the model fingerprint (rscbir.models.config.ModelConfig.fingerprint)
    tiling: dict
    dim: int | None  # the PCA size asked for (None: full vectors)
    whiten: float = 0.0
    augment: int = 0
    centre_scenes: bool = False
    index_type: str = "auto"  # the FAISS type asked for
    dtype: str = "float32"

    def diff(self, other: "IndexSettings") -> dict[str, tuple[Any, Any]]:
        """``{setting: (self's, other's)}`` for each comparable setting that differs (empty: appends may mix)."""
        return {key: (getattr(self, key), getattr(other, key)) for key in COMPARABLE if getattr(self, key) != getattr(other, key)}

    def describe_diff(self, other: "IndexSettings") -> str:
        """The differences of :meth:`diff` for people: ``model backbone: a -> b; dim: 128 -> 64``."""
        parts = []
        for key, (before, now) in self.diff(other).items():
            if key == "model":
                parts.append(", ".join(f"{k}: {before.get(k)} -> {now.get(k)}" for k in now if before.get(k) != now.get(k)))
            else:
                parts.append(f"{before} -> {now}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Trained:
    """The trained empty FAISS index every segment of an IVF/PQ type starts from: its file and its type."""

    file: str
    factory: str


@dataclass(frozen=True)
class SceneRecord:
    """One indexed scene: id, acquisition date and where it came from, content hash, patches; ``doc`` is the
    whole record (files, bands, scaling) from which :meth:`rscbir.scene.Scene.from_dict` reopens it."""

    scene_id: str
    date: str | None
    date_source: str
    content_hash: str | None
    patches: int | None
    doc: dict = field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, doc: dict) -> "SceneRecord":
        return cls(doc["scene_id"], doc.get("date"), doc.get("date_source", "not recorded"), doc.get("content_hash"),
                   doc.get("patches"), dict(doc))  # fmt: skip

    def to_dict(self) -> dict:
        return dict(self.doc)


@dataclass(frozen=True)
class SegmentRecord:
    """One immutable segment: its id, patch count, scenes, FAISS type, files and lookup record."""

    id: int
    count: int
    scenes: tuple[str, ...]
    index_type: str | None
    files: dict
    lookup: dict | None = None

    @classmethod
    def from_dict(cls, doc: dict) -> "SegmentRecord":
        return cls(int(doc["id"]), int(doc["count"]), tuple(doc.get("scenes", ())), doc.get("index_type"), dict(doc["files"]),
                   doc.get("lookup"))  # fmt: skip

    def to_dict(self) -> dict:
        doc = {"id": self.id, "count": self.count, "scenes": list(self.scenes), "index_type": self.index_type, "files": dict(self.files)}
        if self.lookup is not None:
            doc["lookup"] = self.lookup
        return doc

    @property
    def lossy(self) -> bool:
        """Whether the segment's FAISS codes are lossy (SQ, PQ): its scores are re-ranked on the stored vectors."""
        kind = self.index_type or ""
        return "SQ" in kind or "PQ" in kind


@dataclass(frozen=True)
class Manifest:
    """What ``index.json`` says: settings, scenes, segments, shared files and checksums of one generation."""

    generation: int
    count: int
    dim: int
    dtype: str
    index_type: str
    index_type_requested: str
    model: dict  # rscbir.models.config.ModelConfig.to_dict
    pca_dim: int | None
    pca_requested: int | None
    whiten: float
    augment: int
    centre_scenes: bool
    tiling: dict
    grid: dict | None
    scenes: tuple[SceneRecord, ...]
    segments: tuple[SegmentRecord, ...]
    files: dict  # shared files: the PCA, the trained empty FAISS index of IVF/PQ types
    trained_type: str | None = None
    checksums: dict = field(default_factory=dict, compare=False)
    version: int = VERSION

    @classmethod
    def from_dict(cls, doc: dict) -> "Manifest":
        """Parse a manifest of any version; a version-1 index (whole files) reads as one segment of those files."""
        if "segments" in doc:
            segments, shared = doc["segments"], dict(doc.get("files", {}))
        else:
            files = doc["files"]
            segments = [{"id": 0, "count": doc["count"], "scenes": [s["scene_id"] for s in doc["scenes"]],
                         "index_type": doc.get("index_type"), "files": {k: files[k] for k in SEGMENT_KEYS if files.get(k)}}]  # fmt: skip
            shared = {k: v for k, v in files.items() if k not in SEGMENT_KEYS}
        return cls(
            generation=int(doc["generation"]),
            count=int(doc["count"]),
            dim=int(doc["dim"]),
            dtype=doc["dtype"],
            index_type=doc["index_type"],
            index_type_requested=doc.get("index_type_requested", doc.get("index_type", "auto")),
            model=doc["model"],
            pca_dim=doc.get("pca_dim"),
            pca_requested=doc.get("pca_requested", doc.get("pca_dim")),
            whiten=doc.get("whiten", 0.0),
            augment=int(doc.get("augment", 0)),
            centre_scenes=bool(doc.get("centre_scenes", False)),
            tiling=doc["tiling"],
            grid=doc.get("grid"),
            scenes=tuple(SceneRecord.from_dict(s) for s in doc["scenes"]),
            segments=tuple(SegmentRecord.from_dict(s) for s in segments),
            files=shared,
            trained_type=doc.get("trained_type"),
            checksums=dict(doc.get("checksums", {})),
            version=int(doc.get("version", 1)),
        )

    def to_dict(self) -> dict:
        """The JSON document, always written at the current version."""
        doc = {"format": FORMAT, "version": VERSION, "trained_type": self.trained_type}
        for item in dataclasses.fields(self):
            if item.name not in ("scenes", "segments", "version", "trained_type", "checksums"):
                doc[item.name] = getattr(self, item.name)
        doc["scenes"] = [s.to_dict() for s in self.scenes]
        doc["segments"] = [s.to_dict() for s in self.segments]
        doc["checksums"] = self.checksums
        return doc

    def replace(self, **changes) -> "Manifest":
        return dataclasses.replace(self, **changes)

    @property
    def settings(self) -> IndexSettings:
        return IndexSettings(ModelConfig.from_dict(self.model).fingerprint(), self.tiling, self.pca_requested, self.whiten, self.augment, self.centre_scenes,
                             self.index_type_requested, self.dtype)  # fmt: skip

    @property
    def trained(self) -> Trained | None:
        """The shared trained quantizer, when the index has one."""
        return Trained(self.files["trained"], self.trained_type) if self.files.get("trained") and self.trained_type else None

    def with_trained(self, trained: Trained | None) -> "Manifest":
        """The manifest recording ``trained`` as the shared quantizer (unchanged for None)."""
        if trained is None:
            return self
        return self.replace(files={**self.files, "trained": trained.file}, trained_type=trained.factory)

    @property
    def dates(self) -> list[str]:
        """The distinct acquisition dates indexed, earliest first."""
        return sorted({s.date for s in self.scenes if s.date})

    def scene(self, scene_id: str) -> SceneRecord | None:
        return next((s for s in self.scenes if s.scene_id == scene_id), None)

    def data_files(self) -> list[str]:
        """Every data file the manifest names (shared files, then each segment's)."""
        return [*self.files.values(), *(name for s in self.segments for name in s.files.values())]

    def next_segment_id(self) -> int:
        return 1 + max((s.id for s in self.segments), default=0)

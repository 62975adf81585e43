"""The on-disk index folder: patch catalog + embeddings + FAISS index, written atomically.

Layout of ``INDEX_DIR``::

    index.json               manifest: model fingerprint, tiling, scenes, the files of the current generation
    catalog-000003.parquet   patch rows; row i <-> vector i <-> FAISS id i
    vectors-000003.npy       (N, dim) embeddings, kept for appends, exact re-ranking and query by patch
    faiss-000003.index       the FAISS index (inner product on L2-normalised vectors = cosine)
    .staging/                per-scene embedding stores of a run in progress (resume)

Every change writes a new generation of files, fsyncs them, and only then
replaces ``index.json`` (temporary file + rename). A kill -9 at any moment
therefore leaves the previous complete index readable; the next run reuses
every scene already embedded into ``.staging/`` and completes the index.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import faiss
import geopandas as gpd
import numpy as np
import pandas as pd

from rscbir.atomic import atomic_path, fsync_path, settle_folder
from rscbir.catalog import read_catalog
from rscbir.embed import EmbeddingStore, EmbedOptions, Runner, embed_scenes
from rscbir.errors import IndexFileError, InvalidSceneError, ModelMismatchError, QueryError
from rscbir.grid import Grid, common_grid
from rscbir.manifest import FORMAT, MANIFEST, check_sizes, file_records, read_manifest
from rscbir.models.features import FeatureModel, ModelConfig
from rscbir.models.whitening import PCAWhitening
from rscbir.rerank import augment_database, normalise
from rscbir.scene import Scene, normalise_date
from rscbir.tiling import TilingConfig, aligned_grid

log = logging.getLogger(__name__)

VERSION = 1
EXACT_LIMIT = 100_000  # up to this many vectors "auto" keeps exact search
# Database-side augmentation with each patch's 5 nearest (chosen among 3, 5, 10 on the design half of RSSCN7):
# with query expansion, mAP 0.569 -> 0.610 on all of RSSCN7 (benchmarks/results.md).
DEFAULT_AUGMENT = 5
STAGING = ".staging"


def auto_index_type(count: int) -> str:
    """FAISS factory string for ``count`` vectors: exact up to 100k, HNSW beyond."""
    return "Flat" if count <= EXACT_LIMIT else "HNSW32"


def build_faiss(vectors: np.ndarray, factory: str, chunk: int = 65536) -> faiss.Index:
    """A FAISS index (inner product) over float vectors, trained when the type needs it."""
    n, dim = vectors.shape
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise IndexFileError(f"FAISS cannot build index type {factory!r} ({str(exc).splitlines()[-1]}); try Flat, HNSW32 or IVF1024,PQ32") from None
    if not index.is_trained:
        needed = faiss.extract_index_ivf(index).nlist if "IVF" in factory else 256
        if n < needed:
            raise IndexFileError(f"index type {factory!r} needs at least {needed} vectors to train, the index has {n}; use Flat")
        sample = vectors[np.sort(np.random.default_rng(0).permutation(n)[:200_000])]
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    for start in range(0, n, chunk):
        index.add(np.ascontiguousarray(vectors[start : start + chunk], dtype=np.float32))
    tune_search(index)
    return index


def tune_search(index: faiss.Index) -> None:
    """Search-time knobs for recall >= 0.95 at 10 (see benchmarks/bench_query.py)."""
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = max(index.hnsw.efSearch, 128)
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return
    ivf.nprobe = max(ivf.nprobe, min(ivf.nlist, 64))


def scene_content_hash(scene: Scene) -> str:
    """BLAKE2b of the scene's files (names and bytes) and band selection."""
    digest = hashlib.blake2b(digest_size=16)
    for path in scene.paths:
        digest.update(Path(path).name.encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
    digest.update(",".join(scene.band_names).encode())
    return digest.hexdigest()


def _grid_key(grid: Grid | None) -> str:
    if grid is None:
        return "native"
    text = f"{grid.crs.to_wkt()}|{tuple(grid.transform)[:6]}|{grid.width}x{grid.height}"
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def _fingerprint_key(config: ModelConfig, tiling: TilingConfig, options: EmbedOptions) -> str:
    text = json.dumps([config.fingerprint(), tiling.to_dict(), options.dtype.value], sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


@dataclass
class Index:
    """An index folder opened for reading (and appending with :func:`build_index`)."""

    path: Path
    manifest: dict
    catalog: gpd.GeoDataFrame
    vectors: np.ndarray  # the patches' own embeddings (after PCA): change, feedback marks, query by patch
    faiss_index: faiss.Index  # built over search_vectors
    augmented: np.ndarray | None = None  # database-side augmented vectors (--augment), what FAISS searches

    @property
    def search_vectors(self) -> np.ndarray:
        """The vectors FAISS ranks: augmented ones when the index was built with ``--augment``."""
        return self.augmented if self.augmented is not None else self.vectors

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike) -> "Index":
        """Open ``path``; raises :class:`IndexFileError` when it is not a complete index."""
        path = Path(path)
        manifest = read_manifest(path)
        check_sizes(path, manifest)
        try:
            files = manifest["files"]
            catalog = read_catalog(path / files["catalog"])
            vectors = np.load(path / files["vectors"], mmap_mode="r")
            augmented = np.load(path / files["augmented"], mmap_mode="r") if files.get("augmented") else None
            index = faiss.read_index(str(path / files["faiss"]))
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise IndexFileError(f"{path}: index files are unreadable or corrupt ({first}); rebuild it with `rscbir index`") from None
        if not (len(catalog) == len(vectors) == index.ntotal == manifest["count"]) or (augmented is not None and len(augmented) != len(vectors)):
            raise IndexFileError(
                f"{path}: index parts disagree ({len(catalog)} patches, {len(vectors)} vectors, {index.ntotal} in FAISS); rebuild it"
            )
        tune_search(index)
        return cls(path, manifest, catalog, vectors, index, augmented)

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.manifest["model"])

    @property
    def pca(self) -> PCAWhitening | None:
        name = self.manifest["files"].get("pca")
        return PCAWhitening.load(self.path / name) if name else None

    @property
    def tiling(self) -> TilingConfig:
        return TilingConfig.from_dict(self.manifest["tiling"])

    @property
    def grid(self) -> Grid | None:
        """The common grid of an aligned index (``--align``), else None."""
        doc = self.manifest.get("grid")
        return Grid.from_dict(doc) if doc else None

    def scene_record(self, scene_id: str) -> dict:
        """The manifest record of an indexed scene (files, bands, scaling, date)."""
        for record in self.manifest["scenes"]:
            if record["scene_id"] == scene_id:
                return record
        raise IndexFileError(f"{self.path}: no scene {scene_id!r}; indexed: {', '.join(s['scene_id'] for s in self.manifest['scenes'])}")

    def scenes_on(self, dates: Sequence[str]) -> list[dict]:
        """The scene record of each of two or more distinct dates of an aligned index (for change)."""
        if not self.manifest.get("grid"):
            raise QueryError(f"{self.path} was not indexed with --align; change needs every date on one grid")
        wanted = [normalise_date(d) for d in dates]
        if len(set(wanted)) != len(wanted):
            raise QueryError(f"dates {', '.join(wanted)}: give two different dates to compare")
        records = []
        for date in wanted:
            found = [s for s in self.manifest["scenes"] if s.get("date") == date]
            if not found:
                have = sorted({s.get("date") or "undated" for s in self.manifest["scenes"]})
                raise QueryError(f"no scene of date {date} in {self.path}; dates indexed: {', '.join(have)}")
            records.append(found[0])
        return records

    def __len__(self) -> int:
        return len(self.catalog)

    def co_located(self, before_id: str, after_id: str) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, np.ndarray, np.ndarray]:
        """Catalog rows and stored vectors of the patches indexed in both scenes at the same (row, col).

        Returns (before rows, after rows, before vectors, after vectors), row-aligned.
        """
        a, b = (self.catalog[self.catalog["scene_id"] == s].set_index(["row", "col"]) for s in (before_id, after_id))
        common = a.index.intersection(b.index)
        rows_a = gpd.GeoDataFrame(a.loc[common].reset_index(), geometry="geometry", crs="EPSG:4326")
        rows_b = gpd.GeoDataFrame(b.loc[common].reset_index(), geometry="geometry", crs="EPSG:4326")
        va = np.asarray(self.vectors[rows_a["vector"].to_numpy()], dtype=np.float32)
        vb = np.asarray(self.vectors[rows_b["vector"].to_numpy()], dtype=np.float32)
        return rows_a, rows_b, va, vb

    # ------------------------------------------------------------------- search
    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per query row, FAISS style; ``allowed`` is a bool mask of ids.

        Filtered searches widen the FAISS candidate list until ``k`` allowed ids
        are found or the whole index has been ranked. Missing results are -1.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        n = len(self)
        if n == 0:
            raise IndexFileError(f"{self.path}: the index is empty; add scenes with `rscbir index`")
        k = min(k, n if allowed is None else int(allowed.sum()))
        scores = np.full((len(queries), max(k, 0)), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), max(k, 0)), -1, dtype=np.int64)
        if k <= 0:
            return scores, ids
        for q, query in enumerate(queries):
            want = k
            while True:
                fetch = min(n, want)
                d, i = self.faiss_index.search(query[None], fetch)
                d, i = d[0], i[0]
                keep = i >= 0
                if allowed is not None:
                    keep &= allowed[np.clip(i, 0, n - 1)]
                if keep.sum() >= k or fetch >= n:
                    d, i = d[keep][:k], i[keep][:k]
                    scores[q, : len(d)], ids[q, : len(i)] = d, i
                    break
                want = fetch * 4
        return scores, ids


def build_index(
    path: str | os.PathLike,
    scenes: Sequence[Scene],
    model: FeatureModel,
    tiling: TilingConfig = TilingConfig(),
    align: bool = False,
    options: EmbedOptions = EmbedOptions(),
    index_type: str = "auto",
    runner: Runner | None = None,
    augment: int = DEFAULT_AUGMENT,
    centre_scenes: bool = False,
) -> tuple[Index, dict]:
    """Create ``path`` or append ``scenes`` to it; returns the index and a summary.

    Scenes already present (same id and content hash) are skipped. A different
    model, weights, bands or tiling than the index was built with is refused.
    A scene that cannot be read (corrupt, truncated) is reported in
    ``summary["failed"]`` and skipped; the others are indexed. ``runner`` runs
    the model (default in this process; :class:`rscbir.scale.DaskRunner` on a cluster).
    ``augment`` k > 0 stores database-side augmented vectors for search
    (:func:`rscbir.rerank.augment_database`); an append augments only the new
    patches, with neighbours among every patch. ``centre_scenes`` subtracts each
    scene's mean vector (after PCA): what a whole date shares (light, season,
    sensor) is removed, so the same ground matches across dates (OSCD: the same
    place ranks first for 0.58 -> 0.65 of unchanged places; with grid pooling 0.88).
    """
    path = Path(path)
    existing = _open_for_append(path)
    if existing is not None:
        _check_compatible(path, existing, model.config, tiling, options, augment, centre_scenes)
    created = not path.exists()
    path.mkdir(exist_ok=True)  # the parent must exist, as for every other output
    staging = path / STAGING
    _remove_stale_temporaries(staging)
    summary = {"added": [], "skipped": [], "reused": [], "failed": []}
    new_stores: list = []
    try:
        grid = _index_grid(existing, scenes) if align else None
        new_stores = _stage_scenes(path, existing, scenes, model, tiling, options, grid, runner, summary)
        if not new_stores:
            if existing is None:
                reasons = "; ".join(f["error"] for f in summary["failed"]) or "no scene given"
                raise IndexFileError(f"no scene could be indexed, nothing was written: {reasons}")
            shutil.rmtree(staging, ignore_errors=True)
            return existing, summary
        index = _write_generation(path, existing, new_stores, model.config, tiling, options, index_type, grid, augment, centre_scenes)
    except Exception:
        # An error (not an interruption: Ctrl-C and kill keep .staging so the next run resumes) leaves nothing
        # behind: a folder this run created is removed, else the stages this run wrote.
        if created:
            shutil.rmtree(path, ignore_errors=True)
        else:
            for name in summary["added"]:
                for stage in staging.glob(f"{name}-*"):
                    shutil.rmtree(stage, ignore_errors=True)
            _remove_if_empty(staging)
        raise
    # every stage is now in the index; whatever else .staging holds is left from killed runs of other scenes
    shutil.rmtree(staging, ignore_errors=True)
    return index, summary


def _remove_stale_temporaries(staging: Path) -> None:
    """Half-written stage folders (``.name.xxxx``, from a killed run) can never be resumed: remove them."""
    if staging.is_dir():
        for entry in staging.iterdir():
            if entry.name.startswith("."):
                shutil.rmtree(entry, ignore_errors=True)


def _remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _open_for_append(path: Path) -> Index | None:
    """The index already at ``path`` (None for a new or empty folder); refuses other folders."""
    if path.exists() and not path.is_dir():
        raise IndexFileError(f"{path}: exists and is not a folder")
    if (path / MANIFEST).exists():
        return Index.open(path)
    if path.exists() and any(p for p in path.iterdir() if p.name != STAGING):
        raise IndexFileError(f"{path}: folder exists and holds no rscbir index; choose an empty or new folder")
    return None


def _check_compatible(path: Path, existing: Index, config: ModelConfig, tiling: TilingConfig, options: EmbedOptions,
                      augment: int, centre_scenes: bool) -> None:  # fmt: skip
    """Refuse an append whose vectors would not be comparable with the index's (a diff names what differs)."""
    now = {"model": config.fingerprint(), "tiling": tiling.to_dict(), "dim": options.dim, "whiten": options.whiten, "augment": augment,
           "centre_scenes": centre_scenes}  # fmt: skip
    before = {"model": existing.model_config.fingerprint(), "tiling": existing.manifest["tiling"],
              "dim": existing.manifest.get("pca_requested", existing.manifest.get("pca_dim")),
              "whiten": existing.manifest.get("whiten", 0.0), "augment": existing.manifest.get("augment", 0),
              "centre_scenes": existing.manifest.get("centre_scenes", False)}  # fmt: skip
    if before != now:
        differ = [key for key in now if now[key] != before[key]]
        detail = "; ".join(_describe_difference(key, before[key], now[key]) for key in differ)
        raise ModelMismatchError(
            f"{path} was built with another {' and '.join(differ)} ({detail}); use the same --model/--weights/"
            "--preset/--patch-size/--dim/--augment/--centre-scenes options, or index into a new folder"
        )


def _index_grid(existing: Index | None, scenes: Sequence[Scene]) -> Grid:
    """An aligned index keeps one grid for ever, so (row, col) means the same ground in every date."""
    grid = existing.grid if existing is not None else None
    if grid is None:
        return aligned_grid(scenes)
    for scene in scenes:
        common_grid([grid, scene.grid], ["the index grid", scene.location])
    return grid


def _stage_scenes(path, existing, scenes, model, tiling, options, grid, runner, summary) -> list[tuple[dict, EmbeddingStore, Path]]:
    """Embed each new scene into ``.staging/`` (reusing what a killed run staged); fills ``summary``."""
    staging = path / STAGING
    staging.mkdir(exist_ok=True)
    known = {s["scene_id"]: s for s in (existing.manifest["scenes"] if existing else [])}
    key = _fingerprint_key(model.config, tiling, options)
    new_stores = []
    for scene in scenes:
        try:
            digest = scene_content_hash(scene)
        except OSError as exc:
            summary["failed"].append({"scene": scene.location, "error": str(exc)})
            continue
        if scene.scene_id in known:
            if known[scene.scene_id]["content_hash"] == digest:
                log.info("%s: already indexed, skipped", scene.scene_id)
                summary["skipped"].append(scene.scene_id)
                continue
            raise IndexFileError(
                f"{scene.location}: scene id {scene.scene_id!r} is already in {path} with other content; "
                "rename the file or index into a new folder"
            )
        stage = staging / f"{scene.scene_id}-{digest[:16]}-{key}-{_grid_key(grid)}"
        if (stage / "model.json").is_file():
            store = EmbeddingStore.open(stage)
            log.info("%s: reusing embeddings staged by an earlier run", scene.scene_id)
            summary["reused"].append(scene.scene_id)
        else:
            try:
                # staged raw: the index fits one PCA over every new scene (or applies its recorded one)
                raw = dataclasses.replace(options, dim=None)
                store = embed_scenes([scene], stage, model, tiling, options=raw, grid=grid, runner=runner)
            except InvalidSceneError as exc:
                log.warning("%s: skipped: %s", scene.scene_id, exc)
                summary["failed"].append({"scene": scene.location, "error": str(exc)})
                continue
        record = {**store.meta["scenes"][0], "content_hash": digest, "patches": len(store.vectors)}
        new_stores.append((record, store, stage))
        summary["added"].append(scene.scene_id)
    return new_stores


def _describe_difference(key: str, before, now) -> str:
    if key == "model":
        diffs = [f"{k}: {before.get(k)} -> {now.get(k)}" for k in now if before.get(k) != now.get(k)]
        return ", ".join(diffs)
    return f"{before} -> {now}"


def _index_pca(existing: Index | None, new_stores, options: EmbedOptions) -> PCAWhitening | None:
    """The PCA the new vectors go through: the index's own, or one fitted now on the first scenes.

    A PCA needs more vectors than dimensions; with fewer the index keeps full vectors (and says so).
    """
    if existing is not None:
        return existing.pca
    if not options.dim:
        return None
    total = sum(len(s.vectors) for _, s, _ in new_stores)
    if total <= options.dim:
        log.warning("only %d patches: too few to fit a %d-d PCA; the index keeps %d-d vectors",
                    total, options.dim, new_stores[0][1].vectors.shape[1])  # fmt: skip
        return None
    rng = np.random.default_rng(0)
    share = min(1.0, 200_000 / total)
    sample = np.concatenate([np.asarray(s.vectors[np.sort(rng.permutation(len(s.vectors))[: max(1, int(len(s.vectors) * share))])],
                                        dtype=np.float32) for _, s, _ in new_stores])  # fmt: skip
    return PCAWhitening.fit(sample, options.dim, options.whiten)


def _write_vectors_and_catalog(path: Path, names: dict, existing: Index | None, new_stores, dtype,
                               pca: PCAWhitening | None, centre_scenes: bool = False) -> tuple[np.ndarray, int]:  # fmt: skip
    """Generation files for vectors (old then new, memory-mapped) and the catalog; returns (vectors, total)."""
    old_count = len(existing) if existing else 0
    total = old_count + sum(len(s.vectors) for _, s, _ in new_stores)
    dim = pca.dim if pca is not None else new_stores[0][1].vectors.shape[1]
    vectors = np.lib.format.open_memmap(path / names["vectors"], mode="w+", dtype=dtype, shape=(total, dim))
    for start in range(0, old_count, 65536):
        stop = min(start + 65536, old_count)
        vectors[start:stop] = existing.vectors[start:stop]
    offset = old_count
    frames = [existing.catalog] if existing is not None else []
    for _, store, _ in new_stores:
        def project(chunk: np.ndarray) -> np.ndarray:
            return pca.transform(chunk) if pca is not None else chunk

        shift = 0.0
        if centre_scenes and len(store.vectors):  # each scene's mean direction, what the whole date shares
            shift = sum(project(np.asarray(store.vectors[i : i + 65536], np.float32)).sum(axis=0)
                        for i in range(0, len(store.vectors), 65536)) / len(store.vectors)  # fmt: skip
        for start in range(0, len(store.vectors), 65536):
            chunk = project(np.asarray(store.vectors[start : start + 65536], dtype=np.float32))
            if centre_scenes:
                chunk = normalise(chunk - shift)
            vectors[offset + start : offset + start + len(chunk)] = chunk
        frame = store.catalog.copy()
        frame["vector"] = np.arange(offset, offset + len(frame), dtype=np.int64)
        frames.append(frame)
        offset += len(store.vectors)
    vectors.flush()
    catalog = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs="EPSG:4326")
    catalog.to_parquet(path / names["catalog"], index=False)
    return vectors, total


def _write_augmented(path: Path, name: str, existing: Index | None, vectors: np.ndarray, old_count: int, k: int) -> np.ndarray:
    """Augmented vectors for search: the index's own for old rows, new rows augmented with neighbours among all rows."""
    total = len(vectors)
    neighbours = None
    if total > EXACT_LIMIT:  # exact blockwise search would be quadratic: a FAISS index over the plain vectors finds them
        helper = build_faiss(vectors, auto_index_type(total))
        neighbours = helper.search
    augmented = np.lib.format.open_memmap(path / name, mode="w+", dtype=vectors.dtype, shape=vectors.shape)
    if existing is not None and existing.augmented is not None:
        for start in range(0, old_count, 65536):
            stop = min(start + 65536, old_count)
            augmented[start:stop] = existing.augmented[start:stop]
    new_rows = np.arange(old_count, total)
    for start in range(0, len(new_rows), 65536):
        rows = new_rows[start : start + 65536]
        augmented[rows[0] : rows[-1] + 1] = augment_database(vectors, k, rows, neighbours)
    augmented.flush()
    return augmented


def _faiss_for(existing: Index | None, vectors: np.ndarray, old_count: int, factory: str) -> faiss.Index:
    """Extend the existing FAISS index when its type still fits, else build one over every vector."""
    if existing is not None and factory == existing.manifest["index_type"] and existing.faiss_index.is_trained:
        index = existing.faiss_index
        for start in range(old_count, len(vectors), 65536):
            index.add(np.ascontiguousarray(vectors[start : start + 65536], dtype=np.float32))
        return index
    return build_faiss(vectors, factory)


def _write_generation(path, existing, new_stores, config, tiling, options, index_type, grid, augment: int,
                      centre_scenes: bool = False) -> Index:  # fmt: skip
    """Write generation g+1 (catalog, vectors, FAISS), fsync, then swap the manifest."""
    generation = (existing.manifest["generation"] + 1) if existing else 1
    old_files = dict(existing.manifest["files"]) if existing else {}
    old_count = len(existing) if existing else 0
    pca = _index_pca(existing, new_stores, options)
    names = {
        "catalog": f"catalog-{generation:06d}.parquet",
        "vectors": f"vectors-{generation:06d}.npy",
        "faiss": f"faiss-{generation:06d}.index",
    }
    if augment:
        names["augmented"] = f"augmented-{generation:06d}.npy"
    written = [path / name for name in names.values()]
    try:
        vectors, total = _write_vectors_and_catalog(path, names, existing, new_stores, options.numpy_dtype, pca, centre_scenes)
        dim = vectors.shape[1]
        requested = existing.manifest["index_type_requested"] if (existing is not None and index_type == "auto") else index_type
        factory = auto_index_type(total) if requested == "auto" else requested
        searched = _write_augmented(path, names["augmented"], existing, vectors, old_count, augment) if augment else vectors
        _write_faiss(_faiss_for(existing, searched, old_count, factory), path / names["faiss"])
        pca_name = old_files.get("pca")
        if pca is not None and pca_name is None:
            pca_name = f"pca-{generation:06d}.npz"
            written.append(path / pca_name)
            pca.save(path / pca_name)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "generation": generation,
            "count": total,
            "dim": int(dim),
            "dtype": options.dtype.value,
            "index_type": factory,
            "index_type_requested": requested,
            "model": config.to_dict(),
            "pca_dim": pca.dim if pca is not None else None,
            "pca_requested": existing.manifest.get("pca_requested", existing.manifest.get("pca_dim")) if existing is not None else options.dim,
            "whiten": options.whiten,
            "augment": int(augment),
            "centre_scenes": bool(centre_scenes),
            "tiling": tiling.to_dict(),
            "grid": grid.to_dict() if grid is not None else (existing.manifest.get("grid") if existing else None),
            "scenes": (existing.manifest["scenes"] if existing else []) + [r for r, _, _ in new_stores],
            "files": {**names, **({"pca": pca_name} if pca_name else {})},
        }
        _commit_generation(path, manifest, written)
    except BaseException:
        for file in written:
            file.unlink(missing_ok=True)
        raise
    _drop_files(path, old_files, manifest["files"])
    return Index.open(path)


def _commit_generation(path: Path, manifest: dict, written: Sequence[Path]) -> None:
    """Flush the generation's files, record their sizes and checksums, then swap the manifest (the commit)."""
    for file in written:
        fsync_path(file)
    manifest["checksums"] = file_records(path, manifest["files"].values())
    with atomic_path(path / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))
    settle_folder(path)


def _drop_files(path: Path, old_files: dict, new_files: dict) -> None:
    """Remove the previous generation's files, garbage only once the new manifest is in place."""
    for key, name in old_files.items():
        if name != new_files.get(key):
            (path / name).unlink(missing_ok=True)


def remove_from_index(path: str | os.PathLike, scene_ids: Sequence[str] = (), dates: Sequence[str] = ()) -> tuple[Index, list[str]]:
    """Remove every patch of the scenes ``scene_ids`` and of the ``dates`` from the index; returns the index and the
    scene ids removed.

    Written as a new generation and committed by the manifest swap, like an append: a failure or a kill leaves the
    index as it was. The kept rows keep their vectors (and augmented vectors) as stored; the FAISS index is rebuilt
    over them. Removing every scene is refused (delete the folder instead).
    """
    path = Path(path)
    existing = Index.open(path)
    known = {s["scene_id"]: s for s in existing.manifest["scenes"]}
    wanted_dates = {normalise_date(d) for d in dates}
    unknown = [s for s in scene_ids if s not in known]
    if unknown:
        raise QueryError(f"{path}: no scene {', '.join(map(repr, unknown))} in the index (scenes: {', '.join(known)})")
    missing_dates = wanted_dates - {s.get("date") for s in known.values()}
    if missing_dates:
        raise QueryError(f"{path}: no scene dated {', '.join(sorted(missing_dates))} in the index")
    removed = [sid for sid, s in known.items() if sid in scene_ids or s.get("date") in wanted_dates]
    if len(removed) == len(known):
        raise IndexFileError(f"{path}: that would remove every scene; delete the folder to remove the whole index")
    keep = ~existing.catalog["scene_id"].isin(removed).to_numpy()
    rows = np.flatnonzero(keep)
    generation = existing.manifest["generation"] + 1
    old_files = dict(existing.manifest["files"])
    names = {"catalog": f"catalog-{generation:06d}.parquet", "vectors": f"vectors-{generation:06d}.npy",
             "faiss": f"faiss-{generation:06d}.index"}  # fmt: skip
    if existing.augmented is not None:
        names["augmented"] = f"augmented-{generation:06d}.npy"
    written = [path / name for name in names.values()]
    try:
        copies = {"vectors": existing.vectors, **({"augmented": existing.augmented} if existing.augmented is not None else {})}
        for key, source in copies.items():
            target = np.lib.format.open_memmap(path / names[key], mode="w+", dtype=source.dtype, shape=(len(rows), source.shape[1]))
            for start in range(0, len(rows), 65536):
                target[start : start + 65536] = source[rows[start : start + 65536]]
            target.flush()
            copies[key] = target
        catalog = existing.catalog.iloc[rows].reset_index(drop=True)
        catalog["vector"] = np.arange(len(catalog), dtype=np.int64)
        catalog.to_parquet(path / names["catalog"], index=False)
        searched = copies.get("augmented", copies["vectors"])
        _write_faiss(build_faiss(searched, existing.manifest["index_type"]), path / names["faiss"])
        manifest = {**existing.manifest, "generation": generation, "count": len(rows),
                    "scenes": [s for s in existing.manifest["scenes"] if s["scene_id"] not in removed],
                    "files": {**names, **({"pca": old_files["pca"]} if old_files.get("pca") else {})}}  # fmt: skip
        _commit_generation(path, manifest, written)
    except BaseException:
        for file in written:
            file.unlink(missing_ok=True)
        raise
    _drop_files(path, old_files, manifest["files"])
    return Index.open(path), removed


def _write_faiss(index: faiss.Index, target: Path) -> None:
    """``faiss.write_index`` with its failures (a full disk, a read-only folder) as the OSError they are."""
    try:
        faiss.write_index(index, str(target))
    except RuntimeError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise OSError(errno.EIO, f"FAISS could not write the index ({lines[-1].strip() if lines else 'write failed'})", str(target)) from None


__all__ = ["Index", "build_index", "remove_from_index", "build_faiss", "auto_index_type", "scene_content_hash"]

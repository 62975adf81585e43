"""GeoParquet embeddings out and in at scale: export an index of N patches, import the file, against a plain build.

The index is built as in bench_index_scale.py (real Lite0 NAIP vectors plus jittered fill, synthetic catalog rows
with the real schema, rscbir's own segment writer; no CNN pass), then in fresh processes `rscbir export` writes it
to GeoParquet and `rscbir index build --from-embeddings` builds a new index from that file. Times and peak RSS of
each step side by side, and whether the imported index stores the same vectors.

    python benchmarks/bench_import.py [--size 1000000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_index_scale import fill, scenes_for  # noqa: E402
from bench_query import WORK, real_corpus  # noqa: E402
from child import rscbir_child  # noqa: E402
from record import record  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    args = parser.parse_args()
    from rscbir.index import Index
    from rscbir.index.build import write_generation
    from rscbir.index.manifest import IndexSettings
    from rscbir.models.config import ModelConfig

    work = WORK / f"import_{args.size}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        real, nn = real_corpus(128)
        vectors = fill(real, args.size, nn, np.random.default_rng(0), "jitter")
        config = ModelConfig("efficientnet_lite0", "synthetic", "0" * 64, "grid", ("R", "G", "B"), (0, 1, 2), 224, real.shape[1])
        settings = IndexSettings(config.fingerprint(), {"patch_size": 64}, None, 0.0, 0, False, "auto", "float32")
        start = time.perf_counter()
        (work / "built").mkdir()
        write_generation(work / "built", None, scenes_for(vectors, 0), settings, config, None)
        build_s = time.perf_counter() - start
        del vectors
        export_s, export_rss = rscbir_child("-q", "export", work / "built", "-o", work / "e.parquet")
        import_s, import_rss = rscbir_child("-q", "index", "build", "--from-embeddings", work / "e.parquet", "-o", work / "imported")
        a, b = Index.open(work / "built"), Index.open(work / "imported")
        same = len(a) == len(b) and all(
            np.array_equal(np.asarray(sa.vectors), np.asarray(sb.vectors)) for sa, sb in zip(a.segments, b.segments))
        file_mib = (work / "e.parquet").stat().st_size / 2**20
        factory = b.manifest.index_type
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        f"## GeoParquet embeddings out and in, {args.size:,} patches ({dt.date.today().isoformat()})\n",
        f"Machine: {os.cpu_count()} cores. Command: `python benchmarks/bench_import.py --size {args.size}`. Index as in "
        "bench_index_scale.py (real Lite0 NAIP vectors + jittered fill, 128-d, synthetic catalog rows with the real schema, "
        f"one segment, FAISS {factory}, no augmentation); export and import each in a fresh process.\n",
        "| step | seconds | peak RSS MiB |",
        "|---|---:|---:|",
        f"| plain build (rscbir's segment writer, vectors in memory) | {build_s:.0f} | |",
        f"| `rscbir export` -> GeoParquet ({file_mib:.0f} MiB) | {export_s:.0f} | {export_rss:.0f} |",
        f"| `rscbir index build --from-embeddings` | {import_s:.0f} | {import_rss:.0f} |",
        "",
        f"Import / plain build: **{import_s / build_s:.2f}x**. The imported index stores the same vectors: **{same}**.",
    ]
    record("\n".join(lines), f"import_{args.size}", {"build_s": build_s, "export_s": export_s, "export_rss": export_rss,
                                                     "import_s": import_s, "import_rss": import_rss, "same": same})  # fmt: skip


if __name__ == "__main__":
    main()

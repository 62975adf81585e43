"""Which re-ranking model to train on a user's marks: Rocchio against ridge, logistic and linear SVM.

RSSCN7 is embedded with the default pipeline (4 stages, corpus PCA to 128-d); each image queries the
rest with query expansion against database-augmented vectors (as `rscbir query` ranks); the top 20 are
marked right/wrong by class; each model is fitted on the query + marks and re-ranks everything (marked
wrong removed). Measured on the design half (where the choice was made) and on all 700 images.

    python benchmarks/bench_feedback.py
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import record  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("RSCBIR_DATA", HERE.parents[1] / "shared" / "data"))


def ridge(x: np.ndarray, y: np.ndarray, lam: float = 1.0) -> np.ndarray:
    return np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y)


def logistic(x: np.ndarray, y: np.ndarray, lam: float = 1.0, steps: int = 25) -> np.ndarray:
    """L2-regularised logistic regression by Newton steps (IRLS)."""
    target, w = (y > 0).astype(float), np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-x @ w))
        hessian = (x.T * (p * (1 - p))) @ x + lam * np.eye(len(w))
        w -= np.linalg.solve(hessian, x.T @ (p - target) + lam * w)
    return w


def linear_svm(x: np.ndarray, y: np.ndarray, lam: float = 0.1, steps: int = 200) -> np.ndarray:
    """Squared-hinge linear SVM by gradient descent."""
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        margin = np.maximum(0, 1 - y * (x @ w))
        w -= 0.05 * (-2 * (x.T @ (y * margin)) + lam * w) / len(y)
    return w


def evaluate(vectors: np.ndarray, labels: np.ndarray, model: str) -> tuple[float, float]:
    from rscbir.metrics import RankingScores
    from rscbir.rerank import QueryExpansion, augment_database, feedback_vector

    database = augment_database(vectors, 5)
    n = len(vectors)
    sims = vectors @ database.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argpartition(-sims, 10, axis=1)[:, :10]
    sims = QueryExpansion(10).expand(vectors, database[top], np.take_along_axis(sims, top, 1)) @ database.T
    np.fill_diagonal(sims, -np.inf)
    scores = np.empty_like(sims)
    for i in range(n):
        marked = np.argsort(-sims[i], kind="stable")[:20]
        right = labels[marked] == labels[i]
        positives, negatives = np.vstack([vectors[i][None], vectors[marked[right]]]), vectors[marked[~right]]
        if model == "rocchio":
            w = feedback_vector(positives, negatives)
        else:
            x = np.vstack([positives, negatives])
            y = np.r_[np.ones(len(positives)), -np.ones(len(negatives))]
            w = {"ridge": ridge, "logistic": logistic, "linear SVM": linear_svm}[model](x, y)
        scores[i] = database @ w
        scores[i, marked[~right]] = -np.inf
        scores[i, i] = -np.inf
    ranking = RankingScores(n, (10,))
    ranking.add(scores, labels, labels)
    result = ranking.result()
    return result["mAP"], result["P@10"]


def main() -> None:
    from rscbir.embed import embed_images
    from rscbir.datasets.scene_sets import LabelledImages
    from rscbir.models.load import configure_threads, model_for_images
    from rscbir.models.options import ModelOptions
    from rscbir.models.whitening import PCAWhitening

    if not (DATA / "rsscn7").is_dir():
        sys.exit(f"{DATA / 'rsscn7'} not found; set RSCBIR_DATA")
    configure_threads()
    images = LabelledImages.scan(DATA / "rsscn7")
    raw = embed_images(model_for_images(ModelOptions()), images.paths)
    design = images.halves(0)[0]
    design_rows = np.flatnonzero(np.isin(np.asarray(images.paths, dtype=object), np.asarray(design.paths, dtype=object)))
    rows = []
    for name, subset in (("design half", design_rows), ("all 700", np.arange(len(images.paths)))):
        vectors = PCAWhitening.fit(raw[subset], 128).transform(raw[subset])
        for model in ("rocchio", "ridge", "logistic", "linear SVM"):
            m, p10 = evaluate(vectors, images.labels[subset], model)
            rows.append((name, model, m, p10))
            print(f"{name:<12} {model:<11} mAP {m:.3f}  P@10 {p10:.3f}", flush=True)
    lines = [
        f"\n## Relevance feedback: which model re-ranks ({dt.date.today().isoformat()})\n",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores. Command: `python benchmarks/bench_feedback.py`. "
        "One simulated round: the top 20 of the default ranking marked right/wrong by class; each model fitted on the "
        "query + marks (ridge lambda 1, logistic lambda 1, squared-hinge SVM lambda 0.1; Rocchio: mean of right minus "
        "half the mean of wrong) re-ranks every image; marked-wrong removed.\n",
        "| images | model | mAP | P@10 |",
        "|---|---|---:|---:|",
        *(f"| {name} | {model} | {m:.3f} | {p:.3f} |" for name, model, m, p in rows),
    ]
    record("\n".join(lines), "feedback", [dict(zip(("re_ranking", "model", "map", "p_at_10"), r)) for r in rows])


if __name__ == "__main__":
    main()

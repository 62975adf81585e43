"""Figures of merit, numpy only: average precision, precision at k, ROC AUC, F1.

Kept low in the layers so training (early stopping on validation mAP) and
evaluation compute them the same way.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd


class RankingScores:
    """AP and P@k accumulated over blocks of queries (each row of ``sims`` ranks every item for one query)."""

    def __init__(self, n: int, ks: Sequence[int]) -> None:
        self.n, self.ks = n, [k for k in ks]
        self.ap: list[np.ndarray] = []
        self.hits_at = {k: [] for k in self.ks}

    def add(self, sims: np.ndarray, query_labels: np.ndarray, labels: np.ndarray) -> None:
        order = np.argsort(-sims, axis=1, kind="stable")[:, : self.n - 1]  # the query itself ranks last (-inf); drop it
        relevant = labels[order] == query_labels[:, None]
        hits = np.cumsum(relevant, axis=1)
        n_relevant = (labels[None, :] == query_labels[:, None]).sum(axis=1) - 1
        ranks = np.arange(1, self.n)
        ap = (relevant * hits / ranks).sum(axis=1) / np.maximum(n_relevant, 1)
        self.ap.append(np.where(n_relevant > 0, ap, np.nan))
        for k in self.ks:
            k_eff = min(k, self.n - 1)
            self.hits_at[k].append(hits[:, k_eff - 1] / k_eff)

    def result(self) -> dict:
        ap = np.concatenate(self.ap)
        out = {"mAP": float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan"), "queries": int(self.n)}
        for k in self.ks:
            out[f"P@{k}"] = float(np.concatenate(self.hits_at[k]).mean())
        return out


def mean_average_precision(vectors: np.ndarray, labels: np.ndarray) -> float:
    """mAP when every (L2-normalised) vector queries all the others by cosine; same class = relevant."""
    vectors = np.asarray(vectors, np.float32)
    scores = RankingScores(len(vectors), ())
    for start in range(0, len(vectors), 512):
        sims = vectors[start : start + 512] @ vectors.T
        sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -np.inf
        scores.add(sims, np.asarray(labels)[start : start + 512], np.asarray(labels))
    return scores.result()["mAP"]


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN with one class."""
    labels = np.asarray(labels, dtype=bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = pd.Series(np.asarray(scores, dtype=np.float64)).rank(method="average").to_numpy()
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def precision_recall_f1(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall and F1 of a boolean prediction (recall NaN when nothing is true)."""
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    tp = float((predicted & truth).sum())
    precision = tp / predicted.sum() if predicted.sum() else 0.0
    recall = tp / truth.sum() if truth.sum() else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return float(precision), float(recall), float(f1)

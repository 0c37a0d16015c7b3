"""Paired comparisons of two models on the same rows: is a difference evidence or sampling noise?

The gate compares a candidate with the champion per slice of the holdout, and the nightly shadow comparison
compares the shadow with the champion on matured labels. Both score the *same* transactions with both
models, so the rows are resampled together (``scipy.stats.bootstrap`` with ``paired=True``): what varies is
which transactions were seen, never the pairing, and the interval is much tighter than two independent ones.

No Airflow, no MLflow: arrays in, floats out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

Metric = Callable[[np.ndarray, np.ndarray], float]


def roc_auc(y_true: Any, score: Any) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties counted half; NaN without both classes.

    The same value as ``sklearn.metrics.roc_auc_score``, in a form cheap enough to run a thousand times.
    """
    from scipy.stats import rankdata

    y = np.asarray(y_true).astype(bool)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def pr_auc(y_true: Any, score: Any) -> float:
    """Average precision (``sklearn.metrics.average_precision_score``); NaN without a positive."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(y_true).astype(int)
    return float(average_precision_score(y, score)) if y.sum() else float("nan")


def recall_at(threshold: float) -> Metric:
    """Recall of the decision ``score >= threshold``; NaN without a positive."""

    def metric(y_true: Any, score: Any) -> float:
        y = np.asarray(y_true).astype(bool)
        return float((np.asarray(score)[y] >= threshold).mean()) if y.any() else float("nan")

    return metric


def paired_interval(
    y_true: Any,
    a: Any,
    b: Any,
    metric_a: Metric,
    metric_b: Metric | None = None,
    *,
    confidence: float = 0.95,
    samples: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of ``metric_a(y, a) - metric_b(y, b)`` under a paired bootstrap of the rows.

    ``metric_b`` defaults to ``metric_a`` (it differs when each model decides at its own threshold). Without
    both classes, or with ``samples`` 0, the interval is (NaN, NaN).
    """
    from scipy.stats import bootstrap

    y = np.asarray(y_true, dtype=int)
    scores_a, scores_b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if not len(y) == len(scores_a) == len(scores_b):
        raise ValueError(
            f"paired rows must have one label and two scores each: {len(y)}, {len(scores_a)}, {len(scores_b)}"
        )
    positives = int(y.sum())
    if samples <= 0 or positives == 0 or positives == len(y):
        return math.nan, math.nan
    second = metric_b or metric_a

    def statistic(yy: np.ndarray, aa: np.ndarray, bb: np.ndarray) -> float:
        return metric_a(yy, aa) - second(yy, bb)

    result = bootstrap(
        (y, scores_a, scores_b),
        statistic,
        paired=True,
        vectorized=False,
        n_resamples=samples,
        confidence_level=confidence,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)

"""Realized performance of a labelled day, and whether it dropped below the model's reference."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["performance_drop", "realized_performance"]


def realized_performance(y_true, score, threshold: float) -> dict[str, Any]:
    """Metrics of a labelled day, from :func:`loopline.training.evaluate.evaluate` (score >= threshold flags).

    Returns ``roc_auc``, ``pr_auc``, ``precision_at_threshold``, ``recall_at_threshold``, ``brier``,
    ``flagged_rate`` (None where undefined), ``rows``, ``positives``, ``flagged``, ``threshold`` and
    ``auc_unavailable_reason`` (None when both AUCs are defined). A day with a single class has no AUCs.
    """
    from loopline.training.evaluate import evaluate

    y = np.asarray(y_true).astype(int)
    p = np.asarray(score, dtype=np.float64)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} scores")
    rows, positives = len(y), int(y.sum())
    out: dict[str, Any] = {
        "rows": rows,
        "positives": positives,
        "flagged": int((p >= threshold).sum()),
        "threshold": float(threshold),
        "roc_auc": None,
        "pr_auc": None,
        "precision_at_threshold": None,
        "recall_at_threshold": None,
        "brier": None,
        "flagged_rate": None,
        "auc_unavailable_reason": None,
    }
    if rows == 0:
        out["auc_unavailable_reason"] = "no labelled rows"
        return out
    metrics = evaluate(y, p, threshold)
    for key in ("roc_auc", "pr_auc", "precision_at_threshold", "recall_at_threshold", "brier", "flagged_rate"):
        out[key] = None if math.isnan(metrics[key]) else metrics[key]
    if positives in (0, rows):
        kind = "legitimate" if positives == 0 else "fraud"
        out["roc_auc"] = out["pr_auc"] = None
        out["auc_unavailable_reason"] = f"single class: all {rows} labelled rows are {kind}"
    return out


def performance_drop(current: Mapping[str, Any] | float | None, reference_auc: float | None, tolerance: float) -> bool:
    """Whether the realized ROC AUC fell at least ``tolerance`` (absolute) below ``reference_auc``.

    ``current`` is :func:`realized_performance`'s dict or a ROC AUC; an unknown AUC on either side is no drop.
    """
    auc = current.get("roc_auc") if isinstance(current, Mapping) else current
    if auc is None or reference_auc is None or math.isnan(auc) or math.isnan(reference_auc):
        return False
    drop = reference_auc - auc
    return drop > tolerance or math.isclose(drop, tolerance, rel_tol=0, abs_tol=1e-12)

"""Sliced and fairness metrics for the gate: a challenger must not buy a global gain with one group's loss.

Slices are configuration (``gate.slices``): each names a feature column and, for numeric columns, band edges.
For a model's scores on the holdout, :func:`slice_metrics` computes per group of every slice the ROC AUC, PR
AUC, recall and false-positive rate at the model's threshold (fairlearn's ``MetricFrame``, one per slice), and
whether the group has the support (``min_rows`` rows and ``min_positives`` frauds) to decide anything.
:func:`parity_metrics` gives fairlearn's demographic-parity and equalized-odds differences across the groups of
the configured ``fairness_attribute``. :func:`slice_losses` lists the supported groups where the candidate loses
more than ``tolerance`` of the configured metric against the champion on the same rows, and
:func:`significant_losses` keeps those whose paired bootstrap interval of the difference lies below zero (a
loss that is not sampling noise): any one rejects it.

No Airflow, no MLflow: arrays and pandas in, plain dicts out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd


class SliceError(ValueError):
    """A configured slice cannot be computed on the holdout (e.g. its column is missing)."""


def _safe(metric):
    def wrapped(y_true, y_score):
        y = np.asarray(y_true).astype(int)
        if metric.__name__ == "roc_auc_score" and not 0 < y.sum() < len(y):
            return math.nan
        if metric.__name__ == "average_precision_score" and y.sum() == 0:
            return math.nan
        return float(metric(y, y_score))

    return wrapped


def band_label(edges: Sequence[float], index: int) -> str:
    """``[20, 100)`` for the band starting at ``edges[index]``; ``<0`` below the first edge; last one open."""
    if index < 0:
        return f"<{edges[0]:g}"
    if index >= len(edges) - 1:
        return f">={edges[-1]:g}"
    return f"[{edges[index]:g}, {edges[index + 1]:g})"


def slice_groups(frame: pd.DataFrame, column: str, bands: Sequence[float] | None = None) -> pd.Series:
    """The group (a string) of every row for one slice: the column's value, or its band."""
    if column not in frame.columns:
        raise SliceError(
            f"gate.slices: column {column!r} is not in the holdout (columns: {', '.join(map(str, frame.columns))})"
        )
    values = frame[column]
    if bands:
        numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        index = np.searchsorted(np.asarray(bands, dtype=np.float64), numeric, side="right") - 1
        labels = [band_label(bands, int(i)) for i in index]
        return pd.Series(labels, index=frame.index, dtype=object)
    return values.astype(str).where(values.notna(), "<null>")


def slice_metrics(
    y_true: Any,
    proba: Any,
    threshold: float,
    groups: pd.Series,
    *,
    min_rows: int,
    min_positives: int,
) -> dict[str, dict[str, float | bool]]:
    """Per group: rows, positives, roc_auc, pr_auc, recall_at_threshold, fpr_at_threshold, supported."""
    from fairlearn.metrics import MetricFrame, count, false_positive_rate
    from sklearn.metrics import average_precision_score, recall_score, roc_auc_score

    y = np.asarray(y_true).astype(int)
    p = np.asarray(proba, dtype=np.float64)

    def recall_at(y_t, y_s):
        y_t = np.asarray(y_t).astype(int)
        return float(recall_score(y_t, np.asarray(y_s) >= threshold, zero_division=0)) if y_t.sum() else math.nan

    def fpr_at(y_t, y_s):
        y_t = np.asarray(y_t).astype(int)
        if (y_t == 0).sum() == 0:
            return math.nan
        return float(false_positive_rate(y_t, (np.asarray(y_s) >= threshold).astype(int), pos_label=1))

    def positives(y_t, y_s):
        return float(np.asarray(y_t).astype(int).sum())

    frame = MetricFrame(
        metrics={
            "rows": count,
            "positives": positives,
            "roc_auc": _safe(roc_auc_score),
            "pr_auc": _safe(average_precision_score),
            "recall_at_threshold": recall_at,
            "fpr_at_threshold": fpr_at,
        },
        y_true=y,
        y_pred=p,
        sensitive_features=groups.to_numpy(),
    )
    out: dict[str, dict[str, float | bool]] = {}
    for group, row in frame.by_group.iterrows():
        values = {key: float(value) for key, value in row.items()}
        values["supported"] = values["rows"] >= min_rows and values["positives"] >= min_positives
        out[str(group)] = values
    return out


def parity_metrics(y_true: Any, proba: Any, threshold: float, groups: pd.Series) -> dict[str, Any]:
    """fairlearn's group parity of the flag decision across ``groups``: differences and per-group rates."""
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )

    y = np.asarray(y_true).astype(int)
    flagged = (np.asarray(proba, dtype=np.float64) >= threshold).astype(int)
    sensitive = groups.to_numpy()
    frame = MetricFrame(
        metrics={"selection_rate": selection_rate, "tpr": true_positive_rate, "fpr": false_positive_rate},
        y_true=y,
        y_pred=flagged,
        sensitive_features=sensitive,
    )
    return {
        "demographic_parity_difference": float(demographic_parity_difference(y, flagged, sensitive_features=sensitive)),
        "equalized_odds_difference": float(equalized_odds_difference(y, flagged, sensitive_features=sensitive)),
        "by_group": {
            str(group): {key: float(value) for key, value in row.items()} for group, row in frame.by_group.iterrows()
        },
    }


def evaluate_slices(holdout: pd.DataFrame, y_true: Any, proba: Any, threshold: float, cfg: Any) -> dict[str, Any]:
    """Every configured slice (``cfg`` is ``gate.slices``) and the parity of its fairness attribute."""
    out: dict[str, Any] = {"slices": {}, "parity": None}
    for spec in cfg.by:
        groups = slice_groups(holdout, spec.column, spec.bands)
        out["slices"][spec.name] = slice_metrics(
            y_true, proba, threshold, groups, min_rows=cfg.min_rows, min_positives=cfg.min_positives
        )
        if spec.name == cfg.fairness_attribute:
            out["parity"] = {"attribute": spec.name, **parity_metrics(y_true, proba, threshold, groups)}
    return out


@dataclass(frozen=True)
class SliceLoss:
    """A supported group where the candidate loses more than the tolerance against the champion."""

    slice: str
    group: str
    metric: str
    candidate: float
    champion: float
    drop: float
    tolerance: float
    rows: int
    positives: int
    # paired bootstrap interval of candidate - champion on the slice's rows (None: not computed)
    ci_low: float | None = None
    ci_high: float | None = None

    def describe(self) -> str:
        interval = "" if self.ci_high is None else f", interval [{self.ci_low:+.4f}, {self.ci_high:+.4f}]"
        return (
            f"slice {self.slice}={self.group}: {self.metric} {self.candidate:.4f} vs champion {self.champion:.4f} "
            f"drops {self.drop:.4f} > tolerance {self.tolerance} ({self.rows} rows, {self.positives} frauds"
            f"{interval})"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def slice_losses(
    candidate: dict[str, Any], champion: dict[str, Any], *, metric: str, tolerance: float
) -> list[SliceLoss]:
    """Supported groups (same rows for both models) where ``metric`` drops by more than ``tolerance``; worst first."""
    losses = []
    for name, groups in candidate["slices"].items():
        for group, cand in groups.items():
            champ = champion["slices"].get(name, {}).get(group)
            if champ is None or not cand["supported"]:
                continue
            a, b = cand[metric], champ[metric]
            if not (math.isfinite(a) and math.isfinite(b)):
                continue
            drop = b - a
            if drop > tolerance:
                losses.append(
                    SliceLoss(name, group, metric, a, b, drop, tolerance, int(cand["rows"]), int(cand["positives"]))
                )
    return sorted(losses, key=lambda loss: -loss.drop)


def significant_losses(
    losses: list[SliceLoss],
    holdout: pd.DataFrame,
    y_true: Any,
    candidate: tuple[Any, float],
    champion: tuple[Any, float],
    slicing: Any,
) -> list[SliceLoss]:
    """The ``losses`` that are evidence: the paired bootstrap interval of candidate - champion (each model's
    scores and threshold) on the slice's holdout rows lies entirely below zero. With
    ``slicing.bootstrap_samples`` 0 every loss stands, as the tolerance alone decides."""
    from dataclasses import replace

    from loopline.evidence import paired_interval, pr_auc, recall_at, roc_auc

    if slicing.bootstrap_samples <= 0:
        return losses
    specs = {spec.name: spec for spec in slicing.by}
    y = np.asarray(y_true).astype(int)
    (cand_proba, cand_threshold), (champ_proba, champ_threshold) = candidate, champion
    metrics = {
        "roc_auc": (roc_auc, roc_auc),
        "pr_auc": (pr_auc, pr_auc),
        "recall_at_threshold": (recall_at(cand_threshold), recall_at(champ_threshold)),
    }
    kept = []
    for loss in losses:
        spec = specs[loss.slice]
        rows = (slice_groups(holdout, spec.column, spec.bands) == loss.group).to_numpy()
        metric_a, metric_b = metrics[loss.metric]
        low, high = paired_interval(
            y[rows],
            np.asarray(cand_proba)[rows],
            np.asarray(champ_proba)[rows],
            metric_a,
            metric_b,
            confidence=slicing.confidence,
            samples=slicing.bootstrap_samples,
        )
        if math.isnan(high) or high < 0:  # NaN: no interval possible, the tolerance decides
            kept.append(
                replace(loss, ci_low=None if math.isnan(low) else low, ci_high=None if math.isnan(high) else high)
            )
    return kept

"""Metrics and plots for a scored split.

:func:`evaluate` returns plain floats (NaN where a metric is undefined, e.g. ROC AUC with one class), so
the champion gate compares the challenger and the champion with the same code on the same holdout rows.
Plots are PNG files written with matplotlib's Agg backend (no display needed, safe in a pod).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

CALIBRATION_BINS = 10


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Weighted mean |observed rate - mean predicted probability| over equal-width probability bins."""
    y_true = np.asarray(y_true, dtype=np.float64)
    proba = np.asarray(proba, dtype=np.float64)
    if len(y_true) == 0:
        return math.nan
    index = np.minimum((proba * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            error += mask.sum() * abs(y_true[mask].mean() - proba[mask].mean())
    return float(error / len(y_true))


def evaluate(y_true, proba, threshold: float) -> dict[str, float]:
    """roc_auc, pr_auc, precision/recall at ``threshold`` (score >= threshold flags), brier, ece, log_loss,
    n, positives, flagged_rate."""
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        log_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y = np.asarray(y_true).astype(int)
    p = np.clip(np.asarray(proba, dtype=np.float64), 0.0, 1.0)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} predictions")
    positives = int(y.sum())
    both = 0 < positives < len(y)
    flagged = p >= threshold
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else math.nan,
        "pr_auc": float(average_precision_score(y, p)) if positives else math.nan,
        "precision_at_threshold": float(precision_score(y, flagged, zero_division=0)),
        "recall_at_threshold": float(recall_score(y, flagged, zero_division=0)) if positives else math.nan,
        "brier": float(brier_score_loss(y, p)) if len(y) else math.nan,
        "ece": expected_calibration_error(y, p),
        "log_loss": float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1])) if len(y) else math.nan,
        "n": float(len(y)),
        "positives": float(positives),
        "flagged_rate": float(flagged.mean()) if len(y) else math.nan,
    }


def permutation_importance(
    predict: Callable[[pd.DataFrame], np.ndarray],
    frame: pd.DataFrame,
    y_true,
    columns: list[str] | tuple[str, ...],
    *,
    sample: int = 5000,
    repeats: int = 2,
    seed: int = 0,
) -> dict[str, float]:
    """Mean drop in ROC AUC when one column is shuffled (on a seeded sample of at most ``sample`` rows)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    y = np.asarray(y_true).astype(int)
    if len(frame) > sample:
        index = np.sort(rng.choice(len(frame), size=sample, replace=False))
        frame, y = frame.iloc[index].reset_index(drop=True), y[index]
    else:
        frame = frame.reset_index(drop=True)
    if not 0 < y.sum() < len(y):
        return dict.fromkeys(columns, 0.0)
    base = roc_auc_score(y, predict(frame))
    out = {}
    for name in columns:
        drops = []
        for _ in range(repeats):
            shuffled = frame.copy()
            shuffled[name] = frame[name].to_numpy()[rng.permutation(len(frame))]
            drops.append(base - roc_auc_score(y, predict(shuffled)))
        out[name] = float(np.mean(drops))
    return out


# ---------------------------------------------------------------------------------------------------------
# Plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_roc(y_true, proba, path: Path, title: str = "ROC") -> Path:
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    fpr, tpr, _ = roc_curve(y_true, proba)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label=f"AUC = {roc_auc_score(y_true, proba):.4f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_pr(y_true, proba, path: Path, title: str = "Precision-recall") -> Path:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    plt = _pyplot()
    precision, recall, _ = precision_recall_curve(y_true, proba)
    base_rate = float(np.mean(y_true))
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(recall, precision, label=f"AP = {average_precision_score(y_true, proba):.4f}")
    ax.axhline(base_rate, linestyle="--", color="grey", linewidth=1, label=f"base rate {base_rate:.4f}")
    ax.set(xlabel="recall", ylabel="precision", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_calibration(y_true, proba, path: Path, title: str = "Calibration", bins: int = CALIBRATION_BINS) -> Path:
    """Reliability diagram (quantile bins, so the rare high scores get their own points) and score histogram."""
    plt = _pyplot()
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(proba, dtype=np.float64)
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
    index = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
    mean_p = [p[index == b].mean() for b in np.unique(index)]
    mean_y = [y[index == b].mean() for b in np.unique(index)]
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    ax.plot(mean_p, mean_y, marker="o", label=f"model (ECE {expected_calibration_error(y, p):.4f})")
    ax.set(ylabel="observed fraud rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="upper left")
    hist.hist(p, bins=50, range=(0, 1), color="tab:blue", alpha=0.7, log=True)
    hist.set(xlabel="predicted probability", ylabel="rows (log)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_feature_importance(importance: dict[str, float], path: Path, title: str, top: int = 20) -> Path:
    plt = _pyplot()
    items = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:top][::-1]
    fig, ax = plt.subplots(figsize=(7, max(3, 0.3 * len(items) + 1)))
    ax.barh([name for name, _ in items], [value for _, value in items], color="tab:blue")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_plots(
    folder: Path, y_true, proba, importance: dict[str, float], importance_kind: str, prefix: str = "holdout"
) -> list[Path]:
    """ROC, PR, calibration and feature importance PNGs for one split; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    y = np.asarray(y_true).astype(int)
    paths = []
    if 0 < y.sum() < len(y):
        paths.append(plot_roc(y, proba, folder / f"{prefix}_roc.png", f"ROC ({prefix})"))
        paths.append(plot_pr(y, proba, folder / f"{prefix}_pr.png", f"Precision-recall ({prefix})"))
    paths.append(plot_calibration(y, proba, folder / f"{prefix}_calibration.png", f"Calibration ({prefix})"))
    title = f"Feature importance: {importance_kind}"
    paths.append(plot_feature_importance(importance, folder / "feature_importance.png", title))
    return paths

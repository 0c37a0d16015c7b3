"""A slice loss rejects a challenger only when the paired bootstrap says it is not sampling noise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from loopline.config import load_config
from loopline.evidence import paired_interval, recall_at, roc_auc
from loopline.slices import SliceLoss, significant_losses


def _slicing(samples: int = 400):
    return load_config(environ={"LOOPLINE__GATE__SLICES__BOOTSTRAP_SAMPLES": str(samples)}).gate.slices


def _holdout(rows: int, positives: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(seed)
    y = np.zeros(rows, dtype=int)
    y[rng.choice(rows, positives, replace=False)] = 1
    return pd.DataFrame({"country": ["FR"] * rows}), y, rng


def _loss(candidate: np.ndarray, champion: np.ndarray, y: np.ndarray) -> SliceLoss:
    a, b = roc_auc(y, candidate), roc_auc(y, champion)
    return SliceLoss("country", "FR", "roc_auc", a, b, b - a, 0.02, len(y), int(y.sum()))


def test_a_real_loss_stands_with_its_interval():
    frame, y, rng = _holdout(2000, 120, seed=1)
    champion = y * 1.5 + rng.normal(size=len(y))
    candidate = y * 0.5 + rng.normal(size=len(y))
    loss = _loss(candidate, champion, y)
    kept = significant_losses([loss], frame, y, (candidate, 0.5), (champion, 0.5), _slicing())
    assert len(kept) == 1
    assert kept[0].ci_high < 0
    assert kept[0].ci_low < loss.candidate - loss.champion < kept[0].ci_high
    assert "interval [" in kept[0].describe()


def test_a_loss_within_sampling_noise_does_not_reject():
    """Two equally good models on a small slice: one 'loses' beyond the tolerance by chance alone."""
    for seed in range(50):
        frame, y, rng = _holdout(300, 30, seed=seed)
        signal = y * 1.0 + rng.normal(size=len(y))
        champion = signal + rng.normal(scale=0.8, size=len(y))
        candidate = signal + rng.normal(scale=0.8, size=len(y))
        loss = _loss(candidate, champion, y)
        if loss.drop > 0.02:
            break
    else:  # pragma: no cover - the seeds above always give one
        pytest.fail("no noisy loss found")
    assert significant_losses([loss], frame, y, (candidate, 0.5), (champion, 0.5), _slicing()) == []
    # with the interval switched off the tolerance alone decides, as before
    assert significant_losses([loss], frame, y, (candidate, 0.5), (champion, 0.5), _slicing(0)) == [loss]


def test_the_paired_interval_uses_each_models_own_threshold_and_matches_sklearn():
    rng = np.random.default_rng(3)
    y = (rng.random(500) < 0.2).astype(int)
    score = y + rng.normal(size=500)
    assert roc_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    # same scores, different thresholds: the lower threshold recalls more, every resample
    low, high = paired_interval(y, score, score, recall_at(0.0), recall_at(1.0), samples=200)
    assert 0 < low <= high
    with pytest.raises(ValueError, match="one label and two scores"):
        paired_interval(y, score[:-1], score, roc_auc)
    assert np.isnan(paired_interval(np.zeros(5), np.arange(5), np.arange(5), roc_auc)[0])

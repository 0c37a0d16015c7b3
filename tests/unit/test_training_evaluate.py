"""Metrics and plots of the trainer's evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loopline.training.evaluate import evaluate, expected_calibration_error, permutation_importance, write_plots


def test_metrics_on_known_scores():
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.6, 0.7, 0.9])
    m = evaluate(y, p, threshold=0.5)
    assert m["roc_auc"] == 1.0
    assert m["pr_auc"] == 1.0
    assert m["precision_at_threshold"] == pytest.approx(2 / 3)  # 0.6, 0.7, 0.9 flagged; 0.6 is legit
    assert m["recall_at_threshold"] == 1.0
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert m["n"] == 5
    assert m["positives"] == 2
    assert m["flagged_rate"] == pytest.approx(0.6)
    assert m["log_loss"] > 0


def test_expected_calibration_error():
    assert expected_calibration_error(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5])) == 0.0
    # Two bins: 0.1 predicted where 0 happen (error 0.1), 0.9 predicted where 1 happens (error 0.1).
    assert expected_calibration_error(np.array([0, 1]), np.array([0.1, 0.9])) == pytest.approx(0.1)
    assert expected_calibration_error(np.array([1, 1]), np.array([0.0, 0.0])) == pytest.approx(1.0)


def test_one_class_gives_nan_not_an_error():
    m = evaluate(np.zeros(4), np.array([0.1, 0.2, 0.3, 0.4]), threshold=0.5)
    assert math.isnan(m["roc_auc"])
    assert math.isnan(m["pr_auc"])
    assert m["precision_at_threshold"] == 0.0
    with pytest.raises(ValueError, match="4 labels but 3 predictions"):
        evaluate(np.zeros(4), np.zeros(3), threshold=0.5)


def test_permutation_importance_finds_the_signal():
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"signal": rng.normal(size=2000), "noise": rng.normal(size=2000)})
    y = (frame["signal"] > 0.5).astype(int).to_numpy()
    importance = permutation_importance(lambda df: df["signal"].to_numpy(), frame, y, ["signal", "noise"], sample=500)
    assert importance["signal"] > 0.2
    assert importance["noise"] == 0.0


def test_plots_are_png_files(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p = np.clip(y * 0.6 + rng.random(300) * 0.4, 0, 1)
    paths = write_plots(tmp_path, y, p, {"a": 3.0, "b": 1.0}, "gain")
    assert sorted(path.name for path in paths) == [
        "feature_importance.png",
        "holdout_calibration.png",
        "holdout_pr.png",
        "holdout_roc.png",
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

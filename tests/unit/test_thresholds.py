"""Thresholds from the alert policy: chosen on validation scores, checked on each scored day."""

from __future__ import annotations

import numpy as np
import pytest

from loopline.config import ConfigError, ThresholdPolicyConfig, load_config
from loopline.thresholds import ThresholdPolicyError, check_alert_rate, choose_threshold


def low_scores(n: int, seed: int, fraud_rate: float = 0.015) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated scores of a weak model on rare fraud: every score far below 0.2, frauds a little higher."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < fraud_rate).astype(int)
    logit = rng.normal(-6.0, 0.6, n) + 1.6 * y
    return y, 1 / (1 + np.exp(-logit))


def test_budget_flags_the_budgeted_share_where_the_fixed_threshold_flags_nothing():
    y_val, p_val = low_scores(5000, seed=1)
    assert p_val.max() < 0.2 / 4  # the scores never come near the old fixed threshold
    assert (p_val >= 0.2).sum() == 0
    policy = ThresholdPolicyConfig(kind="alert_budget", alert_budget=0.02)
    decision = choose_threshold(y_val, p_val, policy, fixed_threshold=0.2)
    assert decision.threshold < 0.05
    assert 0.019 <= decision.expected_alert_rate <= 0.02
    # A new day from the same traffic flags about the budget, inside the band: no alert.
    y_day, p_day = low_scores(5000, seed=2)
    flagged = int((p_day >= decision.threshold).sum())
    assert 0.012 <= flagged / 5000 <= 0.03
    assert (y_day[p_day >= decision.threshold]).sum() > 0  # some of the day's frauds reach the queue
    check = check_alert_rate(5000, flagged, decision.as_dict())
    assert not check.out_of_band
    assert "within" in check.message


def test_target_precision_picks_the_lowest_threshold_that_meets_it():
    rng = np.random.default_rng(3)
    y = (rng.random(20000) < 0.05).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(-4, 1, len(y)) + 3.0 * y)))
    policy = ThresholdPolicyConfig(kind="target_precision", target_precision=0.6, min_alerts=20)
    decision = choose_threshold(y, p, policy, fixed_threshold=0.2)
    assert decision.validation_precision >= 0.6
    lower = p[p < decision.threshold].max()  # the next lower threshold misses the target
    flagged = p >= lower
    assert y[flagged].mean() < 0.6 or flagged.sum() < 20


def test_fixed_policy_keeps_the_configured_threshold():
    y, p = low_scores(1000, seed=4)
    decision = choose_threshold(y, p, ThresholdPolicyConfig(kind="fixed"), fixed_threshold=0.2)
    assert decision.threshold == 0.2
    assert decision.expected_alert_rate == 0.0


@pytest.mark.parametrize(
    ("policy", "setting"),
    [
        (ThresholdPolicyConfig(kind="target_precision", target_precision=0.9, min_alerts=50), "target_precision"),
        (ThresholdPolicyConfig(kind="alert_budget", alert_budget=0.001, min_alerts=5), "alert_budget"),
    ],
)
def test_a_policy_no_threshold_can_meet_names_the_setting(policy, setting):
    y, p = low_scores(2000, seed=5)
    with pytest.raises(ThresholdPolicyError, match=rf"scoring\.threshold_policy\.{setting}"):
        choose_threshold(y, p, policy, fixed_threshold=0.2)


def test_a_day_outside_the_band_alerts():
    y, p = low_scores(5000, seed=6)
    decision = choose_threshold(y, p, ThresholdPolicyConfig(alert_budget=0.02, band_factor=2.0), fixed_threshold=0.2)
    assert check_alert_rate(5000, 300, decision.as_dict()).out_of_band  # 6% > 2 x 2%
    low = check_alert_rate(5000, 10, decision.as_dict())  # 0.2% < 2% / 2
    assert low.out_of_band
    assert "below" in low.message
    assert not check_alert_rate(5000, 0, None).out_of_band  # no band recorded (an old version)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("SCORING__THRESHOLD_POLICY__KIND", "top_k", "scoring.threshold_policy.kind"),
        ("SCORING__THRESHOLD_POLICY__ALERT_BUDGET", "1.5", "scoring.threshold_policy.alert_budget"),
        ("SCORING__THRESHOLD_POLICY__BAND_FACTOR", "0.5", "scoring.threshold_policy.band_factor"),
        ("GATE__SLICES__FAIRNESS_ATTRIBUTE", "merchant", "gate.slices"),
        ("GATE__SLICES__BY", "[{name: shoe, column: shoe_size}]", "gate.slices.by.0.column"),
        ("GATE__SLICES__BY", "[{name: amt, column: amount_eur, bands: [100, 20]}]", "gate.slices.by.0.bands"),
        ("TRAINING__SEARCH__SPACE", "{xgboost: {max_depth: {low: 8, high: 3}}}", "training.search.space"),
        ("TRAINING__SEARCH__SPACE", "{xgboost: {subsample: {low: 0.5, high: 1.5}}}", "training.search.space"),
        ("TRAINING__SEARCH__SPACE", "{xgboost: {hidden: {low: 1, high: 2}}}", "training.search.space"),
        ("TRAINING__SEARCH__SPACE", "{xgboost: {learning_rate: {low: 0, high: 1, log: true}}}", "training.search"),
        ("TRAINING__SEARCH__TRIALS", "-1", "training.search.trials"),
    ],
)
def test_bad_policy_or_slice_config_names_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(environ={f"LOOPLINE__{key}": value})

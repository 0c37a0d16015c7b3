"""The shadow's evidence as pure functions: paired bootstrap of the ROC AUC difference, pairing, the verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from loopline import promotion
from loopline.drift import BOTH, COVARIATE, PATTERN, DriftResult, drift_kind, retrain_decision


def _labels(n: int, rate: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < rate).astype(int)


def test_roc_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    y = _labels(500, 0.2, 2)
    score = np.round(rng.random(500), 1)  # many ties
    assert promotion.roc_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert np.isnan(promotion.roc_auc(np.zeros(5), np.arange(5)))


def test_paired_interval_separates_a_better_model_and_straddles_zero_for_a_twin():
    rng = np.random.default_rng(3)
    y = _labels(4000, 0.1, 4)
    signal = y + rng.normal(0, 1.0, len(y))
    better = y + rng.normal(0, 0.6, len(y))
    won = promotion.paired_auc_difference(y, better, signal, samples=400, seed=1)
    assert won.difference == pytest.approx(roc_auc_score(y, better) - roc_auc_score(y, signal))
    assert 0 < won.ci_low < won.difference < won.ci_high
    lost = promotion.paired_auc_difference(y, signal, better, samples=400, seed=1)
    assert lost.ci_high < 0
    # The same scores on both sides: the paired difference is exactly zero in every resample.
    twin = promotion.paired_auc_difference(y, signal, signal, samples=200, seed=1)
    assert (twin.difference, twin.ci_low, twin.ci_high) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="paired rows"):
        promotion.paired_auc_difference(y, signal[:-1], signal)


def test_pairing_keeps_only_transactions_both_scored_and_labelled():
    champion = pd.DataFrame({"transaction_id": ["a", "b", "c", "d"], "score": [0.1, 0.2, 0.3, 0.4]})
    shadow = pd.DataFrame({"transaction_id": ["b", "c", "d", "e"], "score": [0.5, 0.6, 0.7, 0.8]})
    labels = pd.DataFrame({"transaction_id": ["a", "c", "d", "e"], "is_fraud": [1, 0, 1, 1]})
    rows = promotion.paired_rows(champion, shadow, labels)
    assert sorted(rows["transaction_id"]) == ["c", "d"]
    assert rows.set_index("transaction_id").loc["d"].to_dict() == {"champion": 0.4, "shadow": 0.7, "is_fraud": 1}


def _diff(low: float, high: float, positives: int = 500) -> promotion.PairedDifference:
    return promotion.PairedDifference(5000, positives, 0.9, 0.88, (low + high) / 2, low, high, 0.95)


RULE = {"min_days": 3, "min_positives": 100, "min_improvement": 0.0, "slice_tolerance": 0.02}


def test_judge_waits_for_days_and_frauds_then_decides():
    assert promotion.judge(_diff(0.01, 0.03), 2, {}, **RULE).outcome == promotion.WAIT
    assert promotion.judge(_diff(0.01, 0.03, positives=50), 5, {}, **RULE).outcome == promotion.WAIT
    won = promotion.judge(_diff(0.01, 0.03), 3, {}, **RULE)
    assert won.outcome == promotion.WIN
    assert "interval [+0.0100, +0.0300]" in won.reason
    assert promotion.judge(_diff(-0.03, -0.01), 3, {}, **RULE).outcome == promotion.LOSE
    assert promotion.judge(_diff(-0.01, 0.02), 3, {}, **RULE).outcome == promotion.WAIT
    losing_slice = {"channel": {"atm": {"supported": True, "difference": -0.05, "ci_high": -0.03}}}
    verdict = promotion.judge(_diff(0.01, 0.03), 3, losing_slice, **RULE)
    assert verdict.outcome == promotion.LOSE
    assert "channel=atm" in verdict.reason
    unsupported = {"channel": {"atm": {"supported": False, "difference": -0.05, "ci_high": -0.03}}}
    assert promotion.judge(_diff(0.01, 0.03), 3, unsupported, **RULE).outcome == promotion.WIN


def _result(features: tuple[str, ...], segments: tuple[str, ...]) -> DriftResult:
    signals = len(features) + 2 * len(segments)
    return DriftResult(
        backend="scipy",
        tests=(),
        drifted_features=features,
        multivariate_drifted=None,
        score_drifted=None,
        signals=signals,
        min_drifted_features=2,
        drift=signals >= 2,
        reference_rows=100,
        current_rows=100,
        p_value=0.05,
        correction="bonferroni",
        drifted_segments=segments,
    )


def test_drift_kind_and_the_retraining_it_asks_for():
    import datetime as dt

    now = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)
    covariate = _result(("amount_eur", "log_amount"), ())
    pattern = _result((), ("card_testing",))
    both = _result(("amount_eur", "log_amount"), ("card_testing",))
    assert drift_kind(covariate, False) == COVARIATE
    assert drift_kind(pattern, False) == PATTERN
    assert drift_kind(both, False) == BOTH
    assert drift_kind(None, True) == PATTERN  # realized performance fell
    assert drift_kind(_result((), ()), False) is None
    note = "for 2026-03-30"
    later = retrain_decision(pattern, False, None, now, 72, False, defer_pattern=True, maturity_note=note)
    assert (later.trigger, later.schedule, later.kind) == (False, True, PATTERN)
    assert "retraining scheduled for 2026-03-30" in later.reason
    at_once = retrain_decision(both, False, None, now, 72, False, defer_pattern=True, maturity_note=note)
    assert (at_once.trigger, at_once.schedule) == (True, True)
    assert at_once.reason.startswith("data drift")
    assert "scheduled for 2026-03-30" in at_once.reason
    assert retrain_decision(covariate, False, None, now, 72, False, defer_pattern=True).schedule is False
    due = retrain_decision(None, False, None, now, 72, False, defer_pattern=True, due=["2026-02-18"])
    assert due.trigger
    assert due.due == ["2026-02-18"]
    assert "scheduled retraining due" in due.reason
    # Without deferral (the old rule) a pattern retrains at once.
    assert retrain_decision(pattern, False, None, now, 72, False).trigger


def test_no_verdict_after_max_days_is_inconclusive():
    spanning = _diff(-0.01, 0.02)
    assert promotion.judge(spanning, 4, {}, **RULE, max_days=5).outcome == promotion.WAIT
    verdict = promotion.judge(spanning, 5, {}, **RULE, max_days=5)
    assert verdict.outcome == promotion.INCONCLUSIVE
    assert "inconclusive after 5 compared day(s) (promotion.max_shadow_days 5)" in verdict.reason
    # Too few frauds after max_days: no verdict either.
    assert promotion.judge(_diff(0.01, 0.03, positives=50), 6, {}, **RULE, max_days=5).outcome == "inconclusive"
    # A verdict on the last day still counts.
    assert promotion.judge(_diff(0.01, 0.03), 5, {}, **RULE, max_days=5).outcome == promotion.WIN
    assert promotion.judge(_diff(-0.03, -0.01), 5, {}, **RULE, max_days=5).outcome == promotion.LOSE
    assert promotion.judge(spanning, 50, {}, **RULE).outcome == promotion.WAIT  # unset: judged until it decides


def test_max_shadow_days_below_min_days_is_refused():
    from loopline.config import ConfigError, load_config

    overrides = {"LOOPLINE__PROMOTION__MIN_DAYS": "5", "LOOPLINE__PROMOTION__MAX_SHADOW_DAYS": "3"}
    with pytest.raises(ConfigError, match=r"promotion.max_shadow_days \(3\) must be at least promotion.min_days \(5\)"):
        load_config(environ=overrides)
    allowed = load_config(environ={**overrides, "LOOPLINE__PROMOTION__MAX_SHADOW_DAYS": "5"})
    assert allowed.promotion.max_shadow_days == 5

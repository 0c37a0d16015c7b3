"""Each model version's decision threshold, chosen on its validation data from the configured alert policy.

A calibrated fraud probability means different things on different data: where fraud is rare, every score
may sit far below a fixed cut-off and nothing is ever flagged. So the threshold is not a constant: the trainer
chooses it per version (:func:`choose_threshold`) from ``scoring.threshold_policy``:

``alert_budget``
    the share of transactions the review team can look at: the lowest threshold that flags at most that share
    of the validation rows;
``target_precision``
    the lowest threshold (most recall) whose validation precision reaches the target, with at least
    ``min_alerts`` alerts;
``fixed``
    ``scoring.threshold`` for every version (the behaviour before policies).

The choice (:class:`ThresholdDecision`) is recorded with the version (``meta.json``'s ``decision`` section,
MLflow params and tags) and used by scoring, shadow scoring and the gate. Each scored day's flag rate is then
compared with the rate expected on validation (:func:`check_alert_rate`): outside
``[expected / band_factor, expected * band_factor]`` the day raises an alert.

Pure functions on arrays: no Airflow, no MLflow.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

POLICY_KINDS = ("alert_budget", "target_precision", "fixed")
SETTING = "scoring.threshold_policy"


class ThresholdPolicyError(ValueError):
    """No threshold meets the configured policy on the validation data; the message names the setting."""


@dataclass(frozen=True)
class ThresholdDecision:
    """The threshold a version decides with, how it was chosen, and what it did on validation."""

    threshold: float
    policy: str
    target: float | None
    expected_alert_rate: float
    validation_precision: float
    validation_recall: float
    validation_rows: int
    band_factor: float

    @property
    def band(self) -> tuple[float, float]:
        """The flag rates a scored day may show without an alert."""
        return self.expected_alert_rate / self.band_factor, min(1.0, self.expected_alert_rate * self.band_factor)

    def as_dict(self) -> dict[str, Any]:
        low, high = self.band
        return {**asdict(self), "band_low": low, "band_high": high}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ThresholdDecision:
        fields = cls.__dataclass_fields__
        return cls(**{key: value for key, value in data.items() if key in fields})


def _flag_stats(y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[float, float, float]:
    flagged = p >= threshold
    n_flagged = int(flagged.sum())
    positives = int(y.sum())
    tp = int((flagged & (y == 1)).sum())
    rate = n_flagged / len(p) if len(p) else math.nan
    precision = tp / n_flagged if n_flagged else 0.0
    recall = tp / positives if positives else math.nan
    return rate, precision, recall


def choose_threshold(y_true: Any, proba: Any, policy: Any, *, fixed_threshold: float) -> ThresholdDecision:
    """The threshold ``policy`` (a ``scoring.threshold_policy`` section) picks on validation labels and scores.

    A row is flagged when ``score >= threshold``. Raises :class:`ThresholdPolicyError` naming the setting when
    no threshold can meet the policy on these rows (empty validation, a budget smaller than one alert, a
    precision no threshold reaches with ``min_alerts`` alerts).
    """
    y = np.asarray(y_true).astype(int)
    p = np.asarray(proba, dtype=np.float64)
    if len(p) == 0 or len(y) != len(p):
        raise ThresholdPolicyError(f"{SETTING}: no validation rows to choose a threshold on")
    kind = policy.kind
    if kind == "fixed":
        threshold, target = float(fixed_threshold), None
    elif kind == "alert_budget":
        threshold, target = _budget_threshold(p, policy.alert_budget, policy.min_alerts), policy.alert_budget
    elif kind == "target_precision":
        threshold, target = _precision_threshold(y, p, policy.target_precision, policy.min_alerts)
    else:  # pragma: no cover - the config loader allows only POLICY_KINDS
        raise ThresholdPolicyError(f"{SETTING}.kind: unknown policy {kind!r}; expected one of {POLICY_KINDS}")
    rate, precision, recall = _flag_stats(y, p, threshold)
    return ThresholdDecision(
        threshold=float(threshold),
        policy=kind,
        target=None if target is None else float(target),
        expected_alert_rate=float(rate),
        validation_precision=float(precision),
        validation_recall=float(recall),
        validation_rows=len(p),
        band_factor=float(policy.band_factor),
    )


def _flag_counts(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct scores ascending, and for each how many rows score at or above it."""
    values = np.unique(p)
    at_or_above = len(p) - np.searchsorted(np.sort(p), values, side="left")
    return values, at_or_above


def _budget_threshold(p: np.ndarray, budget: float, min_alerts: int) -> float:
    allowed = math.floor(budget * len(p) + 1e-9)
    if allowed < max(1, min_alerts):
        raise ThresholdPolicyError(
            f"{SETTING}.alert_budget {budget}: {len(p)} validation rows allow {allowed} alert(s), fewer than "
            f"{SETTING}.min_alerts ({min_alerts}); raise the budget or validate on more days"
        )
    values, counts = _flag_counts(p)
    fits = np.flatnonzero(counts <= allowed)
    if len(fits) == 0:  # pragma: no cover - the maximum alone is at least one row; ties at the top only
        raise ThresholdPolicyError(f"{SETTING}.alert_budget {budget}: the top score is shared by too many rows")
    index = fits[0]
    if counts[index] < min_alerts:
        raise ThresholdPolicyError(
            f"{SETTING}.alert_budget {budget}: tied scores leave only {counts[index]} alert(s) within the budget, "
            f"fewer than {SETTING}.min_alerts ({min_alerts})"
        )
    return float(values[index])


def _precision_threshold(y: np.ndarray, p: np.ndarray, target: float, min_alerts: int) -> tuple[float, float]:
    order = np.argsort(-p, kind="stable")
    ys, ps = y[order], p[order]
    tp = np.cumsum(ys)
    flagged = np.arange(1, len(ps) + 1)
    # Only the last row of each run of tied scores is a threshold someone can choose.
    last_of_tie = np.append(ps[1:] != ps[:-1], True)
    precision = tp / flagged
    ok = last_of_tie & (precision >= target) & (flagged >= min_alerts)
    if not ok.any():
        eligible = last_of_tie & (flagged >= min_alerts)
        best = float(precision[eligible].max()) if eligible.any() else math.nan
        raise ThresholdPolicyError(
            f"{SETTING}.target_precision {target}: no threshold reaches it on the validation data with at least "
            f"{SETTING}.min_alerts ({min_alerts}) alerts (best precision {best:.4f}); lower the target or use "
            "an alert_budget policy"
        )
    index = int(np.flatnonzero(ok)[-1])  # the most alerts (the lowest threshold) that still meets the target
    return float(ps[index]), target


@dataclass(frozen=True)
class AlertRateCheck:
    """A scored day's flag rate against its version's policy band."""

    rows: int
    flagged: int
    alert_rate: float
    expected_alert_rate: float | None
    band_low: float | None
    band_high: float | None
    out_of_band: bool
    message: str


def check_alert_rate(rows: int, flagged: int, decision: dict[str, Any] | None) -> AlertRateCheck:
    """Compare a day's flag rate with the band recorded with the version (no band recorded: never alerts)."""
    rate = flagged / rows if rows else 0.0
    if not decision or decision.get("expected_alert_rate") is None or not rows:
        return AlertRateCheck(rows, flagged, rate, None, None, None, False, "no alert policy band recorded")
    parsed = ThresholdDecision.from_dict(decision)
    low, high = parsed.band
    out = not (low <= rate <= high)
    where = "below" if rate < low else "above" if rate > high else "within"
    message = (
        f"flag rate {rate:.4%} ({flagged} of {rows}) is {where} the {parsed.policy} band "
        f"[{low:.4%}, {high:.4%}] (expected {parsed.expected_alert_rate:.4%} on validation, "
        f"band factor {parsed.band_factor:g}, threshold {parsed.threshold:.6g})"
    )
    return AlertRateCheck(rows, flagged, rate, parsed.expected_alert_rate, low, high, out, message)

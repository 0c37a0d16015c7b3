"""Sections of serving and watching: retries, the threshold policy, scoring, drift (with its segments) and
alerts (channels, lateness).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from loopline.config.base import _IDENTIFIER, _Section


class RetryConfig(_Section):
    """Retries of every task whose failure may be transient (infrastructure), with exponential backoff."""

    retries: int = Field(default=2, ge=0)
    """Retries of every task whose failure may be transient (data errors fail at once)."""
    delay_seconds: int = Field(default=120, ge=1)
    """First retry delay; doubled on each try."""
    max_delay_seconds: int = Field(default=1200, ge=1)
    """Longest retry delay."""


class ThresholdPolicyConfig(_Section):
    """How each version's threshold is chosen on its validation data (see :mod:`loopline.thresholds`)."""

    kind: Literal["alert_budget", "target_precision", "fixed"] = "alert_budget"
    """``alert_budget``, ``target_precision`` or ``fixed`` (``scoring.threshold``)."""
    alert_budget: float = Field(default=0.02, gt=0, lt=1)
    """``alert_budget``: flag at most this share of transactions (what a review team can handle)."""
    target_precision: float = Field(default=0.5, gt=0, le=1)
    """``target_precision``: the lowest threshold whose validation precision reaches this."""
    min_alerts: int = Field(default=5, ge=1)
    """A threshold flagging fewer validation rows than this is refused."""
    band_factor: float = Field(default=2.0, gt=1)
    """A scored day flagging outside ``[expected / f, expected * f]`` raises an alert."""


class ScoringConfig(_Section):
    threshold: float = Field(gt=0, lt=1)
    """The fixed threshold: for policy kind ``fixed``, and for versions recorded without a threshold of their own."""
    threshold_policy: ThresholdPolicyConfig = Field(default_factory=ThresholdPolicyConfig)
    """How each version's threshold is chosen on its validation data when it is trained."""
    reason_codes: int = Field(ge=0)
    """Features listed in each explained row's reasons (0: none)."""
    explain: Literal["flagged", "all", "none"]
    """Which rows get reason codes: ``flagged``, ``all`` or ``none``."""
    reason_method: Literal["exact", "approx"]
    """``exact`` (XGBoost TreeSHAP) or ``approx`` (Saabas, cheaper); the MLP always uses occlusion."""
    shadow: bool
    """Also score the ``shadow`` model (else the ``challenger``) into ``transaction_scores_shadow``."""


class SegmentCondition(_Section):
    """``feature op value``, or ``feature op`` the reference's ``reference_quantile`` of that feature."""

    feature: str
    """Feature column (or ``score``) the condition tests."""
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    """Comparison: ``<``, ``<=``, ``>``, ``>=``, ``==`` or ``!=``."""
    value: float | None = None
    """Fixed bound (exactly one of ``value`` or ``reference_quantile``)."""
    reference_quantile: float | None = Field(default=None, ge=0, le=1)
    """Bound at this quantile of the feature in the reference, fixed when the detector is fitted."""

    @model_validator(mode="after")
    def _one_bound(self) -> SegmentCondition:
        if (self.value is None) == (self.reference_quantile is None):
            raise ValueError(f"condition on {self.feature!r}: give exactly one of value or reference_quantile")
        return self


class SegmentConfig(_Section):
    """A named slice of traffic (all conditions hold) whose share of the night is watched."""

    name: str
    """Segment name (a lower-case identifier), reported as ``segment:<name>``."""
    description: str
    """What the segment stands for, shown in reports."""
    where: list[SegmentCondition] = Field(min_length=1)
    """Conditions that must all hold for a row to be in the segment."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError(f"segment name {value!r} must be a lower-case identifier")
        return value


class DriftConfig(_Section):
    backend: Literal["alibi", "scipy"]
    """``alibi`` (alibi-detect, BSL 1.1 licence) or ``scipy`` (permissive, same univariate decisions)."""
    p_value: float = Field(gt=0, lt=1)
    """Significance level before the multiple-test correction."""
    correction: Literal["bonferroni", "fdr"]
    """Multiple-test correction over the features: ``bonferroni`` or ``fdr``."""
    min_drifted_features: int = Field(ge=1)
    """Signals (drifted features, MMD, score) a night needs to count as drifted."""
    min_effect: float = Field(ge=0, lt=1)
    """A test drifts only when its p-value is below the threshold and its effect (KS distance, or total variation
    distance for a categorical feature) reaches this.
    """
    exclude_features: list[str]
    """Features not tested (they move without any change in behaviour)."""
    count_warming_features: bool
    """Count history features whose window was still filling on the reference's first day as signals (off: tested and
    reported only).
    """
    segments: list[SegmentConfig]
    """Slices of traffic whose share of the night is tested against the reference."""
    min_segment_excess: float = Field(ge=0, lt=1)
    """A segment drifts when its share grew by at least this and its corrected p-value is below the level."""
    segment_signals: int = Field(ge=1)
    """Signals a grown segment counts for."""
    reference_sample_size: int = Field(ge=100)
    """Rows of the reference sample the trainer logs for the drift monitor."""
    performance_tolerance: float = Field(ge=0, le=1)
    """Realized ROC AUC drop against the model's holdout AUC that counts as a retraining reason."""
    performance_min_positives: int = Field(ge=1)
    """Fewer labelled frauds on the matured day: its AUC is too noisy to call a drop."""
    cooldown_hours: int = Field(ge=0)
    """In data time: hours of logical dates between two triggers, so backfills behave as nights would. A
    retraining scheduled at label maturity counts it from the last such retraining only."""
    report_features: int = Field(ge=1)
    """Most drifted features plotted in the HTML report."""
    experiment: str
    """MLflow experiment of the nightly drift reports (one run per day)."""

    @field_validator("segments")
    @classmethod
    def _unique_segments(cls, value: list[SegmentConfig]) -> list[SegmentConfig]:
        names = [segment.name for segment in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"segment name(s) used twice: {', '.join(twice)}")
        return value


_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


class FileChannel(_Section):
    """Local target: one JSON line per alert appended to ``path`` (resolved under the Loopline home)."""

    type: Literal["file"]
    """``file``: one JSON line per alert."""
    path: str = "reports/notifications.jsonl"
    """File the alerts are appended to (resolved under the Loopline home)."""


class LogChannel(_Section):
    """Local target: the alert in the log of the process that raised it (task log, triggerer log)."""

    type: Literal["log"]
    """``log``: the alert in the log of the process that raised it."""


class SmtpChannel(_Section):
    """E-mail through the SMTP provider's ``SmtpNotifier``; host, port and credentials in the connection."""

    type: Literal["smtp"]
    """``smtp``: e-mail through the SMTP provider's ``SmtpNotifier``."""
    conn_id: str = "smtp_default"
    """Airflow connection with host, port and credentials."""
    to: list[str] = Field(min_length=1)
    """Recipients."""
    from_email: str | None = None
    """Sender; None: the connection's ``from_email``."""


class WebhookChannel(_Section):
    """JSON POST (Slack-compatible ``text``) through the HTTP provider's ``HttpNotifier``; URL and token in the
    connection (host, and a ``Authorization`` header in its extra)."""

    type: Literal["webhook"]
    """``webhook``: JSON POST with a Slack-compatible ``text`` through the HTTP provider's ``HttpNotifier``."""
    conn_id: str = "loopline_alerts"
    """Airflow connection with the URL (host) and token (an ``Authorization`` header in its extra)."""
    endpoint: str | None = None
    """Path appended to the connection's host."""


AlertChannel = Annotated[FileChannel | LogChannel | SmtpChannel | WebhookChannel, Field(discriminator="type")]


class LatenessConfig(_Section):
    """Deadline alerts (UTC wall-clock times on the day after ``ds``, when the day's data is due)."""

    enabled: bool = True
    """Deadline alerts on; off for ``airflow dags test`` / ``dag.test()``, which fails a successful run of a DAG with
    deadline alerts in Airflow 3.3.0.
    """
    drop_due: str = "06:00"
    """UTC time (HH:MM, day after ``ds``) by which ``feature_pipeline`` must have finished ``ds``."""
    scores_due: str = "09:00"
    """UTC time (HH:MM, day after ``ds``) by which ``batch_score`` must have finished ``ds``."""
    drift_max_hours: int = Field(default=30, ge=1)
    """``drift_monitor`` must have finished ``ds`` this many hours after ``ds`` ended."""

    @field_validator("drop_due", "scores_due")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError(f"{value!r} is not a time of day HH:MM (24-hour, UTC)")
        return value

    def due_after_ds(self, hhmm: str) -> timedelta:
        """How long after the start of ``ds`` (its logical date) a time of the next day is."""
        hours, minutes = (int(part) for part in hhmm.split(":"))
        return timedelta(days=1, hours=hours, minutes=minutes)


class AlertsConfig(_Section):
    """Where failure, lateness and drift/retraining alerts go: one or more channels, all of them each time."""

    channels: list[AlertChannel] = Field(min_length=1)
    """Every alert goes to every channel: ``file``, ``log``, ``smtp``, ``webhook``."""
    airflow_url: str | None = None
    """Base of the run links in alerts; None: Airflow's ``[api] base_url``."""
    lateness: LatenessConfig = Field(default_factory=LatenessConfig)
    """Deadline alerts of the daily DAGs."""

"""Typed configuration for Loopline.

One versioned YAML file (``loopline.yaml`` beside this module, or the file named by ``LOOPLINE_CONFIG``)
is validated into :class:`LooplineConfig`. Unknown keys and wrong types fail with a message naming the
key. Deployment values are overridden by ``LOOPLINE__<SECTION>__<KEY>`` environment variables whose
values are parsed as YAML scalars, so ``LOOPLINE__GATE__MIN_IMPROVEMENT=0.01`` is a float.
"""

from __future__ import annotations

import itertools
import os
import re
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_CONFIG = Path(__file__).with_name("loopline.yaml")
ENV_PREFIX = "LOOPLINE__"
SUPPORTED_VERSION = 1
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_WINDOW = re.compile(r"^(\d+)([hd])$")


class ConfigError(ValueError):
    """The configuration file or an override is invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageConfig(_Section):
    landing_uri: str
    lake_uri: str
    reports_uri: str
    reports_url: str
    aws_conn_id: str
    # A folder every Spark executor sees where an object-store landing drop is copied before Spark reads it;
    # None: Spark reads the object store itself (s3a, needs hadoop-aws in the Spark image).
    stage_uri: str | None = None

    @field_validator("stage_uri")
    @classmethod
    def _stage_is_a_folder(cls, value: str | None) -> str | None:
        if value and "://" in value and not value.startswith("file://"):
            raise ValueError("a folder (a path or file://), not an object-store URI: Spark reads the copies there")
        return value


class SparkConfig(_Section):
    conn_id: str
    connect_url: str
    pool: str
    pool_slots: int = Field(ge=1)
    driver_memory: str
    shuffle_partitions: int = Field(ge=1)
    # Extra properties of the Spark Connect server that `loopline up` starts (not of a cluster's).
    server_conf: dict[str, str | bool | int | float] = Field(default_factory=dict)


class PostgresConfig(_Section):
    conn_id: str
    schema_: str = Field(alias="schema")
    # Least privilege (loopline.db): the owner runs the migrations, the loader is what conn_id logs in as
    # (DML only), the analyst reads the analyst-facing tables and views (docs/analysts.md).
    owner_role: str = "loopline_owner"
    loader_role: str = "loopline_loader"
    analyst_role: str = "loopline_analyst"
    # Airflow connection that logs in as the owner, for `loopline migrate` against a database the stack did
    # not start (compose, a managed Postgres); the embedded stack's database needs none.
    owner_conn_id: str = "loopline_postgres_owner"
    # Optuna's study tables (training.search): a schema of their own where the loader may create tables, so
    # the analysts' schema stays DDL-free for it.
    search_schema: str = "loopline_search"
    # Airflow connection that logs in as the analyst (read-only): the model-health page beside the UI reads with it.
    analyst_conn_id: str = "loopline_postgres_analyst"

    @field_validator("schema_", "owner_role", "loader_role", "analyst_role", "search_schema")
    @classmethod
    def _identifier(cls, value: str) -> str:
        # Schema and role names are interpolated into DDL as identifiers, so only plain identifiers pass.
        if not _IDENTIFIER.match(value):
            raise ValueError(f"{value!r} is not a plain lower-case SQL identifier")
        return value

    @model_validator(mode="after")
    def _distinct_roles(self) -> PostgresConfig:
        if len({self.owner_role, self.loader_role, self.analyst_role}) != 3:
            raise ValueError("owner_role, loader_role and analyst_role must be three different roles")
        if self.search_schema == self.schema_:
            raise ValueError("search_schema must differ from schema: the loader may create tables in it")
        return self


class MlflowConfig(_Section):
    tracking_uri: str
    artifact_uri: str
    experiment: str
    registered_model: str
    ui_url: str
    # Airflow connection (type http) of a tracking server with basic auth; when it exists, tasks use its URL
    # and login/password instead of tracking_uri (loopline.orchestration.mlflow_access).
    conn_id: str = "loopline_mlflow"


MAX_HOUR_WINDOW = 24  # sliding windows read today's and the previous day's transactions only
MAX_DAY_WINDOW = 62  # the rolling state's days bitmap is a signed 64-bit integer


class FeaturesConfig(_Section):
    """``windows``: customer velocity windows, each giving the features ``cnt_<w>`` and ``sum_<w>``.

    ``<n>h`` (1-24) is an exact sliding window ending one second before the transaction; ``<n>d`` (1-62) is
    day-aligned: the ``n`` full days before the transaction's day plus that day before it. The longest day
    window also names the averages (``avg_amount_<w>``, ``amount_to_avg_<w>``, ``amount_zscore_<w>``) and
    bounds the novelty flags and ``customer_history_days``; at least one day window is required.
    """

    windows: list[str] = Field(min_length=1)
    label_maturity_days: int = Field(ge=1)
    risk_prior_strength: float = Field(gt=0)
    risk_window_days: int = Field(ge=1)

    @field_validator("windows")
    @classmethod
    def _windows(cls, value: list[str]) -> list[str]:
        for window in value:
            match = _WINDOW.match(window)
            if not match:
                raise ValueError(f"window {window!r} must look like '1h' or '7d'")
            number, unit = int(match.group(1)), match.group(2)
            if unit == "h" and not 1 <= number <= MAX_HOUR_WINDOW:
                raise ValueError(
                    f"window {window!r}: hour windows are sliding and span 1-{MAX_HOUR_WINDOW}h; "
                    "write longer ones in days (e.g. '2d')"
                )
            if unit == "d" and not 1 <= number <= MAX_DAY_WINDOW:
                raise ValueError(f"window {window!r}: day windows span 1-{MAX_DAY_WINDOW} days")
            if str(number) + unit != window:
                raise ValueError(f"window {window!r}: write it without leading zeros ('{number}{unit}')")
        twice = sorted({window for window in value if value.count(window) > 1})
        if twice:
            raise ValueError(f"window(s) listed twice: {', '.join(twice)}")
        if not any(window.endswith("d") for window in value):
            raise ValueError(
                "at least one day window (e.g. '30d') is needed: the longest one names the averages and "
                "bounds the novelty flags"
            )
        return value

    def window_hours(self) -> dict[str, int]:
        """Each configured window as hours, e.g. ``{'1h': 1, '7d': 168}``."""
        out = {}
        for window in self.windows:
            number, unit = _WINDOW.match(window).groups()  # type: ignore[union-attr]
            out[window] = int(number) * (24 if unit == "d" else 1)
        return out

    def hour_windows(self) -> dict[str, int]:
        """The sliding windows (``h``), in hours, in configuration order."""
        return {w: int(w[:-1]) for w in self.windows if w.endswith("h")}

    def day_windows(self) -> dict[str, int]:
        """The day-aligned windows (``d``), in days, in configuration order."""
        return {w: int(w[:-1]) for w in self.windows if w.endswith("d")}

    def long_window(self) -> str:
        """The longest day window (``'30d'``): it names the average-amount features."""
        days = self.day_windows()
        return max(days, key=days.__getitem__)


_CURRENCY = re.compile(r"^[A-Z]{3}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")


class FxConfig(_Section):
    """Where the EUR rates come from, and what a day without one does."""

    # static: ``reference.currencies`` rates every day; daily: the ``fx_rates`` landing input of the day
    # (``fx_rates/ds=YYYY-MM-DD/*.csv`` with ``currency,rate_to_eur`` and a ``_SUCCESS`` marker).
    source: Literal["static", "daily"] = "static"
    # daily: a currency without a rate on ``ds`` takes its newest rate of the ``max_age_days`` days before;
    # older or none: its rows are quarantined (``no_fx_rate``), naming the day and the currency.
    max_age_days: int = Field(default=3, ge=0, le=31)


class ReferenceConfig(_Section):
    """Reference data of the landing contract: what a valid transaction may contain.

    ``currencies``: accepted ISO-4217 codes and their EUR rate (the rate of every day with ``fx.source:
    static``; null: only from the daily rates input). ``countries``: accepted ISO-3166 alpha-2 codes (null:
    any two capital letters). ``channels``: accepted channels. ``max_amount_eur``: anything above is a data
    error, not a purchase.
    """

    currencies: dict[str, float | None] = Field(min_length=1)
    fx: FxConfig = Field(default_factory=FxConfig)
    channels: list[str] = Field(min_length=1)
    countries: list[str] | None = None
    max_amount_eur: float = Field(gt=0)

    @field_validator("currencies")
    @classmethod
    def _currencies(cls, value: dict[str, float | None]) -> dict[str, float | None]:
        for code, rate in value.items():
            if not _CURRENCY.match(code):
                raise ValueError(f"currency {code!r} must be an upper-case ISO-4217 code such as 'EUR'")
            if rate is not None and not rate > 0:
                raise ValueError(f"currency {code}: rate to EUR must be positive or null, got {rate}")
        if value.get("EUR") not in (None, 1.0):
            raise ValueError("EUR's rate to EUR is 1.0")
        return value

    @field_validator("channels")
    @classmethod
    def _channels(cls, value: list[str]) -> list[str]:
        bad = [c for c in value if c != c.strip().lower() or not c]
        if bad:
            raise ValueError(f"channels are compared in lower case: {bad}")
        return value

    @field_validator("countries")
    @classmethod
    def _countries(cls, value: list[str] | None) -> list[str] | None:
        bad = [c for c in value or [] if not _COUNTRY.match(c)]
        if bad:
            raise ValueError(f"countries must be ISO-3166 alpha-2 codes in upper case: {bad}")
        return value

    @model_validator(mode="after")
    def _static_rates(self) -> ReferenceConfig:
        if self.fx.source == "static":
            missing = sorted(code for code, rate in self.currencies.items() if rate is None and code != "EUR")
            if missing:
                raise ValueError(f"fx.source is static but currencies {missing} have no rate: give one or use daily")
        return self


class LandingSource(_Section):
    """The input arrives as a landing drop (files and a ``_SUCCESS`` marker): the default."""

    kind: Literal["landing"] = "landing"


class PostgresSource(_Section):
    """The input is a PostgreSQL table or query; each day's rows (``event_time_column`` in the day, UTC) are
    extracted into the day's landing drop, which the ingest then reads like any other.

    ``table`` (``schema.table``) or ``query`` (a SELECT with ``%(start)s`` / ``%(end)s`` placeholders)
    yields the landing contract's columns by name. The day is closed when ``watermark_query`` (default: the
    maximum of ``event_time_column``) reaches the day's end plus ``allowed_lateness_minutes``.
    """

    kind: Literal["postgres"]
    conn_id: str
    table: str | None = None
    query: str | None = None
    event_time_column: str
    watermark_query: str | None = None
    allowed_lateness_minutes: int = Field(default=60, ge=0)
    timeout_seconds: int = Field(default=900, ge=1)
    fetch_rows: int = Field(default=10_000, ge=1)

    @field_validator("table")
    @classmethod
    def _table(cls, value: str | None) -> str | None:
        if value is not None and not all(_IDENTIFIER.match(part) for part in value.split(".")):
            raise ValueError(f"{value!r} must be a plain (schema.)table name; use query for anything else")
        return value

    @field_validator("event_time_column")
    @classmethod
    def _column(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError(f"{value!r} is not a plain lower-case column name")
        return value

    @model_validator(mode="after")
    def _table_or_query(self) -> PostgresSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of table or query")
        if self.query is not None and self.watermark_query is None:
            raise ValueError("a query source needs a watermark_query (when is a day closed?)")
        return self


class S3Source(_Section):
    """The input is a prefix per day in an object store (reached through ``storage.aws_conn_id``): ``prefix``
    with a ``{ds}`` placeholder, e.g. ``s3://exports/payments/date={ds}``, holding the day's contract files
    and a ``_SUCCESS`` marker written last; the day's objects are copied into the day's landing drop."""

    kind: Literal["s3"]
    prefix: str

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.startswith("s3://") or "{ds}" not in value:
            raise ValueError(f"{value!r} must be an s3:// prefix containing {{ds}}")
        return value.rstrip("/")


class SourcesConfig(_Section):
    """Where each input comes from: ``landing`` (the drop contract), ``postgres`` or ``s3``."""

    transactions: LandingSource | PostgresSource | S3Source = Field(default_factory=LandingSource, discriminator="kind")
    labels: LandingSource | PostgresSource | S3Source = Field(default_factory=LandingSource, discriminator="kind")


class ValidationConfig(_Section):
    max_quarantine_rate: float = Field(ge=0, le=1)
    row_count_lookback_days: int = Field(ge=1)
    row_count_min_ratio: float = Field(ge=0)
    row_count_max_ratio: float = Field(gt=0)
    min_rows: int = Field(ge=0)
    sensor_timeout_seconds: int = Field(ge=1)
    sensor_poke_seconds: int = Field(ge=1)
    sensor_mode: Literal["deferrable", "reschedule"]
    engine: Literal["pandas", "spark"]
    # Bounds on what one landing file may make the ingest read: a hostile or broken drop (a multi-gigabyte
    # line, a runaway quote, a gzip bomb) is quarantined whole before Spark reads it, never loaded.
    max_line_bytes: int = Field(default=16 * 2**20, ge=1024)
    max_field_bytes: int = Field(default=8 * 2**20, ge=1024)
    max_decompressed_bytes: int = Field(default=2 * 2**30, ge=2**20)


class BackfillConfig(_Section):
    """Range backfills (``backfill_range``): how many days one chunk processes and the largest range accepted."""

    # Days processed between two checkpoints of the Spark session (its cache is cleared and the progress
    # row written per chunk): size it so a chunk's days fit the Spark server's memory.
    chunk_days: int = Field(default=7, ge=1, le=366)
    max_days: int = Field(default=731, ge=1)  # a longer range is refused: split it
    # A range that re-ingests days later published days depend on recomputes those days too (corrections).
    cascade: bool = True


class KubernetesConfig(_Section):
    namespace: str
    image: str
    service_account: str
    gpus: int = Field(ge=0)
    cpu: str
    memory: str
    node_selector: dict[str, str]
    tolerations: list[dict[str, str]]
    secret_name: str
    startup_timeout_seconds: int = Field(ge=1)
    schedule_timeout_seconds: int = Field(ge=1)
    # The pod's non-root identity: the image's `trainer` user (1000:1000) unless the cluster assigns a range.
    run_as_user: int = Field(default=1000, ge=1)
    run_as_group: int = Field(default=1000, ge=1)
    # The writable emptyDir (HOME, TMPDIR, caches): the rest of the root filesystem is read-only.
    scratch_size: str = "20Gi"


SCHEDULE_PRESETS = ("@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")


# Hyper-parameters (loopline.training.models.TrainParams fields) a search may vary, per model type.
SEARCHABLE: dict[str, tuple[str, ...]] = {
    "xgboost": ("learning_rate", "max_depth", "min_child_weight", "subsample", "colsample_bytree", "reg_lambda"),
    "mlp": ("learning_rate", "dropout", "weight_decay", "batch_size"),
}
_INTEGER_PARAMS = ("max_depth", "batch_size")


class SearchRange(_Section):
    """One hyper-parameter's range: ``low <= value <= high``, sampled on a log scale when ``log``."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _possible(self) -> SearchRange:
        if not self.low < self.high:
            raise ValueError(f"impossible range: low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0 (got {self.low})")
        return self


class SearchConfig(_Section):
    """Hyper-parameter search (Optuna) inside the trainer; ``trials: 0`` trains the configured parameters."""

    trials: int = Field(default=0, ge=0)  # budget in trials (completed + pruned, over every attempt)
    minutes: float = Field(default=30.0, gt=0)  # budget in wall-clock minutes, per attempt
    pruning: bool = True  # median pruning on the validation PR AUC, round by round
    warmup_steps: int = Field(default=10, ge=0)  # rounds (epochs) of a trial before it may be pruned
    # SQLAlchemy URL of the study storage (e.g. Postgres with a dedicated schema), so an interrupted search
    # resumes; the environment variable LOOPLINE_SEARCH_STORAGE_URL (with credentials) takes precedence.
    # None and no variable: the study lives in memory (a killed search starts again).
    storage_url: str | None = None
    space: dict[str, dict[str, SearchRange]] = Field(default_factory=dict)

    @field_validator("space")
    @classmethod
    def _known(cls, value: dict[str, dict[str, SearchRange]]) -> dict[str, dict[str, SearchRange]]:
        for model_type, ranges in value.items():
            if model_type not in SEARCHABLE:
                raise ValueError(f"unknown model type {model_type!r} (one of {', '.join(SEARCHABLE)})")
            for name, bounds in ranges.items():
                if name not in SEARCHABLE[model_type]:
                    raise ValueError(
                        f"{model_type}.{name} is not searchable (one of {', '.join(SEARCHABLE[model_type])})"
                    )
                if name in _INTEGER_PARAMS and (bounds.low != int(bounds.low) or bounds.high != int(bounds.high)):
                    raise ValueError(f"{model_type}.{name} is an integer: give integer low and high")
                if name in ("subsample", "colsample_bytree", "dropout") and not (bounds.low >= 0 and bounds.high <= 1):
                    raise ValueError(f"impossible range for {model_type}.{name}: it must lie within 0..1")
        return value


class TrainingConfig(_Section):
    model_type: Literal["xgboost", "mlp"]
    runner: Literal["local", "kubernetes"]
    schedule: str | None  # train_model's routine retraining; None: only triggered runs
    window_days: int = Field(ge=2)
    validation_days: int = Field(ge=1)
    holdout_days: int = Field(ge=1)
    seed: int
    max_rounds: int = Field(ge=1)
    early_stopping_rounds: int = Field(ge=1)
    max_fraud_rate: float = Field(gt=0, le=1)
    pool: str
    pool_slots: int = Field(ge=1)
    kubernetes: KubernetesConfig
    search: SearchConfig = Field(default_factory=SearchConfig)

    @field_validator("schedule")
    @classmethod
    def _cron_or_preset(cls, value: str | None) -> str | None:
        if value is None or value in SCHEDULE_PRESETS or len(value.split()) == 5:
            return value
        raise ValueError(f"a cron expression of 5 fields, one of {', '.join(SCHEDULE_PRESETS)}, or null")


SLICE_METRICS = ("roc_auc", "pr_auc", "recall_at_threshold", "fpr_at_threshold")


class SliceConfig(_Section):
    """A slicing of the holdout by one feature column: its values, or bands of a numeric column."""

    name: str
    column: str
    # Numeric columns: band edges (ascending); rows fall in [edge_i, edge_i+1), the last band is open-ended.
    bands: list[float] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError(f"slice name {value!r} must be a lower-case identifier")
        return value

    @field_validator("column")
    @classmethod
    def _feature_like(cls, value: str) -> str:
        # a first check that needs no config (the exact window columns are checked by LooplineConfig)
        from loopline.schemas import CATEGORICAL_FEATURES, feature_schema

        fixed = (*CATEGORICAL_FEATURES, *feature_schema(("1h", "1d")).numeric)
        windowed = re.fullmatch(r"(cnt|sum|avg_amount|amount_to_avg|amount_zscore)_\d+[hd]", value)
        if value not in fixed and not windowed:
            raise ValueError(f"column {value!r} is not a feature column (one of {', '.join(fixed)})")
        return value

    @field_validator("bands")
    @classmethod
    def _ascending(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (len(value) < 1 or any(b <= a for a, b in itertools.pairwise(value))):
            raise ValueError(f"bands must be a non-empty, strictly ascending list of edges (got {value})")
        return value


class GateSlicesConfig(_Section):
    """Per-slice comparison of candidate and champion on the same holdout (see :mod:`loopline.slices`)."""

    by: list[SliceConfig] = Field(default_factory=list)
    min_rows: int = Field(default=200, ge=1)  # a slice with fewer holdout rows is reported, never decides
    min_positives: int = Field(default=30, ge=1)
    metric: Literal["roc_auc", "pr_auc", "recall_at_threshold"] = "roc_auc"
    tolerance: float = Field(default=0.02, ge=0)  # largest allowed drop of `metric` in a supported slice
    # A drop beyond the tolerance rejects only when the paired bootstrap interval of candidate - champion on
    # the slice's rows lies below zero at this confidence; 0 samples: the tolerance alone decides.
    confidence: float = Field(default=0.95, gt=0, lt=1)
    bootstrap_samples: int = Field(default=500, ge=0)
    fairness_attribute: str | None = None  # slice name whose groups get fairlearn parity metrics

    @model_validator(mode="after")
    def _consistent(self) -> GateSlicesConfig:
        names = [s.name for s in self.by]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"slice name(s) used twice: {', '.join(twice)}")
        if self.fairness_attribute is not None and self.fairness_attribute not in names:
            raise ValueError(f"fairness_attribute {self.fairness_attribute!r} is not a configured slice name")
        return self


class GateConfig(_Section):
    primary_metric: Literal["roc_auc", "pr_auc"]
    min_improvement: float = Field(ge=0)
    absolute_floor: float = Field(ge=0, le=1)
    guardrails: dict[str, float]
    slices: GateSlicesConfig = Field(default_factory=GateSlicesConfig)


class RegistryConfig(_Section):
    """How model versions are loaded from the registry (gate, scoring, shadow scoring)."""

    # Unsafe: loading a pickled (cloudpickle) pyfunc runs arbitrary code from the model store on the worker.
    # Off, such a version is refused; models are logged as code plus native weights (see loopline.artifacts).
    allow_pickled_models: bool = False


class PromotionConfig(_Section):
    """How a challenger that passed the gate reaches traffic, and the evidence a shadow needs (docs/promotion.md)."""

    # promote: the gate moves ``champion`` itself (as before); shadow_first: the gate gives the winner alias
    # ``shadow``, it is scored in shadow and judged on matured labels, and a person approves the promotion.
    policy: Literal["promote", "shadow_first"] = "promote"
    min_days: int = Field(default=5, ge=1)  # matured days scored by both before the shadow is judged
    min_positives: int = Field(default=200, ge=1)  # labelled frauds over those days, paired rows
    min_improvement: float = Field(default=0.0, ge=0)  # the interval's lower bound must clear this to win
    confidence: float = Field(default=0.95, gt=0.5, lt=1)  # of the paired bootstrap interval
    bootstrap_samples: int = Field(default=1000, ge=100)
    approval_timeout_hours: float = Field(default=72, gt=0)  # an unanswered request is retired after this
    approvers: list[str] = Field(default_factory=list)  # Airflow user ids who may answer; empty: any with access
    retrain_at_label_maturity: bool = True  # a pattern drift schedules its retraining for when its labels matured
    # a shadow still without a verdict after this many compared days is retired as inconclusive; None: never
    max_shadow_days: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _max_after_min(self) -> PromotionConfig:
        if self.max_shadow_days is not None and self.max_shadow_days < self.min_days:
            raise ValueError(
                f"promotion.max_shadow_days ({self.max_shadow_days}) must be at least promotion.min_days "
                f"({self.min_days}): a shadow would be retired before it could be judged"
            )
        return self


class RetryConfig(_Section):
    """Retries of every task whose failure may be transient (infrastructure), with exponential backoff."""

    retries: int = Field(default=2, ge=0)
    delay_seconds: int = Field(default=120, ge=1)
    max_delay_seconds: int = Field(default=1200, ge=1)


class ThresholdPolicyConfig(_Section):
    """How each version's threshold is chosen on its validation data (see :mod:`loopline.thresholds`)."""

    kind: Literal["alert_budget", "target_precision", "fixed"] = "alert_budget"
    alert_budget: float = Field(default=0.02, gt=0, lt=1)  # share of transactions the team can review
    target_precision: float = Field(default=0.5, gt=0, le=1)
    min_alerts: int = Field(default=5, ge=1)  # on validation: fewer alerts than this is no threshold
    band_factor: float = Field(default=2.0, gt=1)  # a day flagging outside [expected/f, expected*f] alerts


class ScoringConfig(_Section):
    threshold: float = Field(gt=0, lt=1)
    threshold_policy: ThresholdPolicyConfig = Field(default_factory=ThresholdPolicyConfig)
    reason_codes: int = Field(ge=0)
    explain: Literal["flagged", "all", "none"]
    reason_method: Literal["exact", "approx"]
    shadow: bool


class SegmentCondition(_Section):
    """``feature op value``, or ``feature op`` the reference's ``reference_quantile`` of that feature."""

    feature: str
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    value: float | None = None
    reference_quantile: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _one_bound(self) -> SegmentCondition:
        if (self.value is None) == (self.reference_quantile is None):
            raise ValueError(f"condition on {self.feature!r}: give exactly one of value or reference_quantile")
        return self


class SegmentConfig(_Section):
    """A named slice of traffic (all conditions hold) whose share of the night is watched."""

    name: str
    description: str
    where: list[SegmentCondition] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError(f"segment name {value!r} must be a lower-case identifier")
        return value


class DriftConfig(_Section):
    backend: Literal["alibi", "scipy"]
    p_value: float = Field(gt=0, lt=1)
    correction: Literal["bonferroni", "fdr"]
    min_drifted_features: int = Field(ge=1)
    min_effect: float = Field(ge=0, lt=1)
    exclude_features: list[str]
    count_warming_features: bool
    segments: list[SegmentConfig]
    min_segment_excess: float = Field(ge=0, lt=1)
    segment_signals: int = Field(ge=1)
    reference_sample_size: int = Field(ge=100)
    performance_tolerance: float = Field(ge=0, le=1)
    performance_min_positives: int = Field(ge=1)
    cooldown_hours: int = Field(ge=0)
    report_features: int = Field(ge=1)
    experiment: str

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
    path: str = "reports/notifications.jsonl"


class LogChannel(_Section):
    """Local target: the alert in the log of the process that raised it (task log, triggerer log)."""

    type: Literal["log"]


class SmtpChannel(_Section):
    """E-mail through the SMTP provider's ``SmtpNotifier``; host, port and credentials in the connection."""

    type: Literal["smtp"]
    conn_id: str = "smtp_default"
    to: list[str] = Field(min_length=1)
    from_email: str | None = None  # None: the connection's from_email


class WebhookChannel(_Section):
    """JSON POST (Slack-compatible ``text``) through the HTTP provider's ``HttpNotifier``; URL and token in the
    connection (host, and a ``Authorization`` header in its extra)."""

    type: Literal["webhook"]
    conn_id: str = "loopline_alerts"
    endpoint: str | None = None


AlertChannel = Annotated[FileChannel | LogChannel | SmtpChannel | WebhookChannel, Field(discriminator="type")]


class LatenessConfig(_Section):
    """Deadline alerts (UTC wall-clock times on the day after ``ds``, when the day's data is due)."""

    # Off for `airflow dags test` / dag.test(): Airflow 3.3.0's dag.test() fails a *successful* run of a DAG
    # with deadline alerts (it looks the alerts up by their definition instead of their stored id).
    enabled: bool = True
    drop_due: str = "06:00"  # feature_pipeline's run for ds not finished (drop, raw, features) by then
    scores_due: str = "09:00"  # batch_score's run for ds not finished (scores published) by then
    drift_max_hours: int = Field(default=30, ge=1)  # drift_monitor's run not finished this long after ds ended

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
    airflow_url: str | None = None  # the UI links point here; None: Airflow's [api] base_url
    lateness: LatenessConfig = Field(default_factory=LatenessConfig)


class LineageConfig(_Section):
    """OpenLineage: the dataset namespace Loopline's events use, and the local event file.

    Where events go is Airflow's own setting (``[openlineage] transport``): the local stack writes them to
    ``events_file`` (file transport, no server); production sets an HTTP transport in its environment.
    """

    enabled: bool = True
    namespace: str = Field(default="loopline", min_length=1)
    events_file: str = "lineage/events.jsonl"


class LooplineConfig(_Section):
    version: int
    storage: StorageConfig
    spark: SparkConfig
    postgres: PostgresConfig
    mlflow: MlflowConfig
    features: FeaturesConfig
    validation: ValidationConfig
    training: TrainingConfig
    gate: GateConfig
    scoring: ScoringConfig
    drift: DriftConfig
    reference: ReferenceConfig
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    backfill: BackfillConfig = Field(default_factory=BackfillConfig)
    alerts: AlertsConfig = Field(default_factory=lambda: AlertsConfig(channels=[FileChannel(type="file")]))
    lineage: LineageConfig = Field(default_factory=LineageConfig)

    @model_validator(mode="after")
    def _slice_columns(self) -> LooplineConfig:
        # checked here, not on the slice: the feature columns depend on this same config's windows
        from loopline.schemas import CATEGORICAL_FEATURES, feature_schema

        known = (*CATEGORICAL_FEATURES, *feature_schema(self.features.windows).numeric)
        for entry in self.gate.slices.by:
            if entry.column not in known:
                raise ValueError(
                    f"gate.slices.by: column {entry.column!r} is not a feature column (one of {', '.join(known)})"
                )
        return self

    @field_validator("version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value != SUPPORTED_VERSION:
            raise ValueError(f"config version {value} is not supported (expected {SUPPORTED_VERSION})")
        return value

    def resolve(self, uri: str) -> str:
        """Resolve a configured path or URI: URIs with a scheme pass through, paths resolve under home."""
        return resolve_uri(uri)


def repo_root() -> Path:
    """The repository root (the folder holding ``dags/`` and ``include/``)."""
    return Path(__file__).resolve().parents[3]


def loopline_home() -> Path:
    """Where local state lives (lake, landing, services): ``$LOOPLINE_HOME`` or ``<repo>/.loopline``."""
    return Path(os.environ.get("LOOPLINE_HOME") or repo_root() / ".loopline").resolve()


def resolve_uri(uri: str) -> str:
    """``s3://…`` and ``file://…`` style URIs pass through; plain paths resolve against :func:`loopline_home`.

    ``sqlite:///relative.db`` becomes an absolute SQLite URI under home as well.
    """
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{loopline_home() / uri.removeprefix('sqlite:///')}"
    if "://" in uri:
        return uri
    path = Path(uri).expanduser()
    return str(path if path.is_absolute() else loopline_home() / path)


def _set_path(tree: dict[str, Any], keys: list[str], value: Any, source: str) -> None:
    node: Any = tree
    for depth, key in enumerate(keys[:-1]):
        if not isinstance(node, dict) or key not in node:
            raise ConfigError(f"{source}: unknown config key {'.'.join(keys[: depth + 1])!r}")
        node = node[key]
    if not isinstance(node, dict) or keys[-1] not in node:
        raise ConfigError(f"{source}: unknown config key {'.'.join(keys)!r}")
    node[keys[-1]] = value


def apply_env_overrides(tree: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    """Apply ``LOOPLINE__SECTION__KEY=value`` overrides to the raw tree (values parsed as YAML)."""
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [part.lower() for part in name.removeprefix(ENV_PREFIX).split("__")]
        _set_path(tree, keys, yaml.safe_load(environ[name]), source=f"environment variable {name}")
    return tree


def _format_errors(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]).replace("schema_", "schema")
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (remove it or check its spelling)")
        elif item["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
        else:
            lines.append(f"  {key}: {item['msg']} (got {item.get('input')!r})")
    return f"invalid Loopline config {source}:\n" + "\n".join(lines)


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> LooplineConfig:
    """Read, override and validate the configuration.

    ``path`` defaults to ``$LOOPLINE_CONFIG`` or the packaged ``loopline.yaml``; ``environ`` defaults to
    ``os.environ``. Raises :class:`ConfigError` naming every offending key.
    """
    environ = dict(os.environ) if environ is None else environ
    source = Path(path or environ.get("LOOPLINE_CONFIG") or DEFAULT_CONFIG)
    try:
        tree = yaml.safe_load(source.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"Loopline config file not found: {source}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"Loopline config {source} is not valid YAML: {exc}") from exc
    if not isinstance(tree, dict):
        raise ConfigError(f"Loopline config {source} must be a mapping of sections")
    apply_env_overrides(tree, environ)
    try:
        return LooplineConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, str(source))) from None


@lru_cache(maxsize=1)
def get_config() -> LooplineConfig:
    """The process-wide configuration (cached; tests call ``get_config.cache_clear()``)."""
    return load_config()

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
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class StorageConfig(_Section):
    landing_uri: str
    """Where landing drops arrive: a folder (relative paths resolve under the Loopline home) or ``s3://bucket/prefix``.
    """
    lake_uri: str
    """The Parquet lake (``raw/``, ``quarantine/``, ``features/``, ``aggregates/``, ``state/``, ``scores/``): a folder
    or ``s3a://`` URI.
    """
    reports_uri: str
    """Where rendered validation (Data Docs) and drift reports are written."""
    reports_url: str
    """Where browsers find ``reports_uri``: served by the Loopline Airflow plugin locally, an https URL in front of the
    reports bucket in production.
    """
    aws_conn_id: str
    """Airflow connection used whenever a URI is ``s3://`` (its extra names the endpoint)."""
    stage_uri: str | None = None
    """A folder every Spark executor sees, where an object-store landing drop is copied before Spark reads it; None:
    Spark reads the object store itself (s3a, needs hadoop-aws in the Spark image).
    """

    @field_validator("stage_uri")
    @classmethod
    def _stage_is_a_folder(cls, value: str | None) -> str | None:
        if value and "://" in value and not value.startswith("file://"):
            raise ValueError("a folder (a path or file://), not an object-store URI: Spark reads the copies there")
        return value


class SparkConfig(_Section):
    conn_id: str
    """Airflow connection of the Spark cluster: type ``spark_connect`` (default) or ``spark`` (a master URL; the task
    functions run as a driver).
    """
    connect_url: str
    """Address (host and port) of the local Spark Connect server that ``loopline up`` starts."""
    pool: str
    """Airflow pool that bounds concurrent Spark tasks."""
    pool_slots: int = Field(ge=1)
    """Slots of the Spark pool: Spark tasks that may run at once."""
    driver_memory: str
    """Driver memory of the local Spark Connect server (JVM size, e.g. ``2g``)."""
    shuffle_partitions: int = Field(ge=1)
    """``spark.sql.shuffle.partitions`` of the local Spark Connect server."""
    server_conf: dict[str, str | bool | int | float] = Field(default_factory=dict)
    """Extra properties of the Spark Connect server that ``loopline up`` starts (not of a cluster's)."""


class PostgresConfig(_Section):
    conn_id: str
    """Airflow connection of the predictions database (the analysts' tables); tasks log in as ``loader_role``."""
    schema_: str = Field(alias="schema")
    """Schema of the analysts' tables and views."""
    owner_role: str = "loopline_owner"
    """Role that owns the schema and runs the migrations (``loopline up`` / ``loopline migrate``)."""
    loader_role: str = "loopline_loader"
    """Role the Airflow tasks log in as: DML on the schema's tables, no DDL."""
    analyst_role: str = "loopline_analyst"
    """Read-only role on the analyst-facing tables and views (BI tools, the model-health page)."""
    owner_conn_id: str = "loopline_postgres_owner"
    """Airflow connection that logs in as the owner, for ``loopline migrate`` against a database the stack did not start
    (compose, a managed Postgres).
    """
    search_schema: str = "loopline_search"
    """Schema of Optuna's study tables (``training.search``): the loader may create tables here, and only here, so the
    analysts' schema stays DDL-free.
    """
    analyst_conn_id: str = "loopline_postgres_analyst"
    """Airflow connection that logs in as the analyst (read-only); the model-health page beside the UI reads with it."""

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
    """MLflow tracking URI used when the ``conn_id`` connection does not exist (relative SQLite paths resolve under the
    Loopline home).
    """
    artifact_uri: str
    """Artifact root of the local tracking store (a folder or an object-store URI)."""
    experiment: str
    """MLflow experiment of the training runs."""
    registered_model: str
    """Registered model name whose aliases (``champion``, ``challenger``, ``shadow``) the loop moves."""
    ui_url: str
    """Base URL of the MLflow UI, for the extra links in the Airflow UI."""
    conn_id: str = "loopline_mlflow"
    """Airflow connection (type http) of a tracking server with basic auth; when it exists, tasks use its URL, login and
    password instead of ``tracking_uri``.
    """


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
    """Customer velocity windows (``<n>h`` sliding, 1-24; ``<n>d`` day-aligned, 1-62), each giving ``cnt_<w>`` and
    ``sum_<w>``; at least one day window.
    """
    label_maturity_days: int = Field(ge=1)
    """Days after which a transaction day counts as labelled: younger days are left out of training and of realized
    performance.
    """
    risk_prior_strength: float = Field(gt=0)
    """Strength of the Bayesian prior that smooths merchant and category fraud rates."""
    risk_window_days: int = Field(ge=1)
    """Merchant and category risk come from labels reported in this many days before ``ds``."""

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

    source: Literal["static", "daily"] = "static"
    """``static``: the ``reference.currencies`` rates every day; ``daily``: the landing's ``fx_rates`` input of the day
    (``currency,rate_to_eur`` and a ``_SUCCESS`` marker).
    """
    max_age_days: int = Field(default=3, ge=0, le=31)
    """With ``daily``: a currency without a rate on ``ds`` takes its newest rate of this many days before; older or
    none: its rows are quarantined (``no_fx_rate``).
    """


class ReferenceConfig(_Section):
    """Reference data of the landing contract: what a valid transaction may contain.

    ``currencies``: accepted ISO-4217 codes and their EUR rate (the rate of every day with ``fx.source:
    static``; null: only from the daily rates input). ``countries``: accepted ISO-3166 alpha-2 codes (null:
    any two capital letters). ``channels``: accepted channels. ``max_amount_eur``: anything above is a data
    error, not a purchase.
    """

    currencies: dict[str, float | None] = Field(min_length=1)
    """Accepted ISO-4217 codes and their EUR rate (null: only from the daily rates input)."""
    fx: FxConfig = Field(default_factory=FxConfig)
    """Where the EUR rates come from, and what a day without one does."""
    channels: list[str] = Field(min_length=1)
    """Accepted channels, lower case; rows with another are quarantined."""
    countries: list[str] | None = None
    """Accepted ISO-3166 alpha-2 codes; rows with another are quarantined (``unknown_country``). Null: any two capital
    letters.
    """
    max_amount_eur: float = Field(gt=0)
    """Largest plausible amount in EUR: anything above is a data error, not a purchase (quarantined)."""

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
    """``landing``: files and ``_SUCCESS`` under ``storage.landing_uri`` (the drop contract)."""


class PostgresSource(_Section):
    """The input is a PostgreSQL table or query; each day's rows (``event_time_column`` in the day, UTC) are
    extracted into the day's landing drop, which the ingest then reads like any other.

    ``table`` (``schema.table``) or ``query`` (a SELECT with ``%(start)s`` / ``%(end)s`` placeholders)
    yields the landing contract's columns by name. The day is closed when ``watermark_query`` (default: the
    maximum of ``event_time_column``) reaches the day's end plus ``allowed_lateness_minutes``.
    """

    kind: Literal["postgres"]
    """``postgres``: the day's rows are extracted from a PostgreSQL table or query into the landing drop."""
    conn_id: str
    """Airflow connection of the source database."""
    table: str | None = None
    """``schema.table`` holding the contract's columns by name (exactly one of ``table`` or ``query``)."""
    query: str | None = None
    """A SELECT with ``%(start)s`` / ``%(end)s`` placeholders yielding the contract's columns (needs
    ``watermark_query``).
    """
    event_time_column: str
    """Column whose value places a row in a day (UTC)."""
    watermark_query: str | None = None
    """Query returning how far the source is complete; default: the maximum of ``event_time_column``."""
    allowed_lateness_minutes: int = Field(default=60, ge=0)
    """The day is closed when the watermark reaches its end plus this many minutes."""
    timeout_seconds: int = Field(default=900, ge=1)
    """Statement timeout of the extract's queries on the source database."""
    fetch_rows: int = Field(default=10_000, ge=1)
    """Rows fetched per round trip of the server-side cursor."""

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
    """``s3``: the day's objects under ``prefix`` are copied into the landing drop."""
    prefix: str
    """``s3://`` prefix with a ``{ds}`` placeholder holding the day's contract files and a ``_SUCCESS`` marker written
    last.
    """

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.startswith("s3://") or "{ds}" not in value:
            raise ValueError(f"{value!r} must be an s3:// prefix containing {{ds}}")
        return value.rstrip("/")


class SourcesConfig(_Section):
    """Where each input comes from: ``landing`` (the drop contract), ``postgres`` or ``s3``."""

    transactions: LandingSource | PostgresSource | S3Source = Field(default_factory=LandingSource, discriminator="kind")
    """Where transactions come from: ``{kind: landing}``, ``{kind: postgres, ...}`` or ``{kind: s3, ...}``."""
    labels: LandingSource | PostgresSource | S3Source = Field(default_factory=LandingSource, discriminator="kind")
    """Where labels come from: ``{kind: landing}``, ``{kind: postgres, ...}`` or ``{kind: s3, ...}``."""


class ValidationConfig(_Section):
    max_quarantine_rate: float = Field(ge=0, le=1)
    """Largest share of a day's rows that may be quarantined before the gate fails the day."""
    row_count_lookback_days: int = Field(ge=1)
    """Recent days whose median row count today's count is compared with."""
    row_count_min_ratio: float = Field(ge=0)
    """Today's rows divided by the recent median must be at least this."""
    row_count_max_ratio: float = Field(gt=0)
    """Today's rows divided by the recent median must be at most this."""
    min_rows: int = Field(ge=0)
    """Fewest rows a day may have."""
    sensor_timeout_seconds: int = Field(ge=1)
    """How long the landing sensor waits for a drop's ``_SUCCESS`` markers before failing the run."""
    sensor_poke_seconds: int = Field(ge=1)
    """Seconds between two checks of the landing sensor."""
    sensor_mode: Literal["deferrable", "reschedule"]
    """``deferrable`` (waits in the triggerer, needs one) or ``reschedule`` (frees the worker slot between checks)."""
    engine: Literal["pandas", "spark"]
    """Where Great Expectations computes: ``pandas`` (the day fits in the worker) or ``spark`` (every expectation is a
    Spark query, for days that do not).
    """
    max_line_bytes: int = Field(default=16 * 2**20, ge=1024)
    """Longest physical line of a landing file; past it the file is quarantined whole (``line_too_long``)."""
    max_field_bytes: int = Field(default=8 * 2**20, ge=1024)
    """Longest quoted field open across lines (a runaway quote); past it the file is quarantined whole
    (``field_too_long``).
    """
    max_decompressed_bytes: int = Field(default=2 * 2**30, ge=2**20)
    """Largest content of one file after gzip (a gzip bomb stops here, ``decompressed_too_large``)."""


class BackfillConfig(_Section):
    """Range backfills (``backfill_range``): how many days one chunk processes and the largest range accepted."""

    chunk_days: int = Field(default=7, ge=1, le=366)
    """Days processed between two checkpoints of a range backfill (the Spark session's cache is cleared and the progress
    row written per chunk): size it so a chunk's days fit the Spark server's memory.
    """
    max_days: int = Field(default=731, ge=1)
    """Longest range accepted at once; a longer one is refused (split it)."""
    cascade: bool = True
    """A range that re-ingests days that later published days depend on recomputes those days too (corrections)."""


class KubernetesConfig(_Section):
    namespace: str
    """Namespace of the trainer pod."""
    image: str
    """Trainer image (``docker/trainer.Dockerfile``)."""
    service_account: str
    """Service account of the trainer pod."""
    gpus: int = Field(ge=0)
    """``nvidia.com/gpu`` requested and limited (0: a CPU pod)."""
    cpu: str
    """CPU request and limit of the trainer pod."""
    memory: str
    """Memory request and limit of the trainer pod."""
    node_selector: dict[str, str]
    """Node selector of the trainer pod (e.g. GPU nodes)."""
    tolerations: list[dict[str, str]]
    """Tolerations of the trainer pod (e.g. the GPU nodes' taint)."""
    secret_name: str
    """Kubernetes secret whose keys become the pod's environment (MLflow and S3 credentials,
    ``LOOPLINE_SEARCH_STORAGE_URL``).
    """
    startup_timeout_seconds: int = Field(ge=1)
    """How long the pod may take to start before the task fails."""
    schedule_timeout_seconds: int = Field(ge=1)
    """How long the pod may wait to be scheduled (e.g. for a free GPU) before the task fails."""
    run_as_user: int = Field(default=1000, ge=1)
    """The pod's non-root user id: the image's ``trainer`` user unless the cluster assigns a range."""
    run_as_group: int = Field(default=1000, ge=1)
    """The pod's non-root group id."""
    scratch_size: str = "20Gi"
    """Size of the writable emptyDir at ``/tmp`` (HOME, TMPDIR, caches); the rest of the root filesystem is read-only.
    """


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
    """Lowest value sampled."""
    high: float
    """Highest value sampled (must exceed ``low``)."""
    log: bool = False
    """Sample on a log scale (needs ``low > 0``)."""

    @model_validator(mode="after")
    def _possible(self) -> SearchRange:
        if not self.low < self.high:
            raise ValueError(f"impossible range: low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0 (got {self.low})")
        return self


class SearchConfig(_Section):
    """Hyper-parameter search (Optuna) inside the trainer; ``trials: 0`` trains the configured parameters."""

    trials: int = Field(default=0, ge=0)
    """Budget in trials (completed and pruned, over every attempt); 0 trains the configured parameters without a search.
    """
    minutes: float = Field(default=30.0, gt=0)
    """Budget in wall-clock minutes per attempt; the search ends at whichever budget ends first."""
    pruning: bool = True
    """Median pruning on the validation PR AUC, round by round."""
    warmup_steps: int = Field(default=10, ge=0)
    """Rounds (epochs) a trial runs before it may be pruned."""
    storage_url: str | None = None
    """SQLAlchemy URL of the study storage, so an interrupted search resumes; ``LOOPLINE_SEARCH_STORAGE_URL`` (with
    credentials) takes precedence. None and no variable: the study lives in memory.
    """
    space: dict[str, dict[str, SearchRange]] = Field(default_factory=dict)
    """Per model type (``xgboost``, ``mlp``): hyper-parameter name to its ``{low, high, log}`` range; unknown parameters
    and impossible ranges fail at load.
    """

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
    """Model trained by default: ``xgboost`` or ``mlp`` (PyTorch)."""
    runner: Literal["local", "kubernetes"]
    """``local``: the trainer runs as a child process of the task; ``kubernetes``: in a pod (KubernetesPodOperator)."""
    schedule: str | None
    """``train_model``'s routine retraining (a 5-field cron or a preset such as ``@weekly``); None: only triggered runs.
    """
    window_days: int = Field(ge=2)
    """Days of features in a training window (training, validation and holdout together)."""
    validation_days: int = Field(ge=1)
    """Most recent days before the holdout used for early stopping and the threshold."""
    holdout_days: int = Field(ge=1)
    """Most recent days of the window kept for the gate's comparison."""
    seed: int
    """Seed of the trainer and of the search's sampler."""
    max_rounds: int = Field(ge=1)
    """Most boosting rounds (XGBoost) or epochs (MLP)."""
    early_stopping_rounds: int = Field(ge=1)
    """Rounds without validation improvement before training stops."""
    max_fraud_rate: float = Field(gt=0, le=1)
    """A larger labelled fraud share is a broken or poisoned label feed: the trainer refuses to train."""
    pool: str
    """Airflow pool of ``train_candidate``: trainings that may run at once."""
    pool_slots: int = Field(ge=1)
    """Slots of the training pool (GPUs for the kubernetes runner, or local trainers the machine can take)."""
    kubernetes: KubernetesConfig
    """The trainer pod of the ``kubernetes`` runner."""
    search: SearchConfig = Field(default_factory=SearchConfig)
    """Hyper-parameter search (Optuna) inside the trainer."""

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
    """Name of the slicing (a lower-case identifier), used in decisions and reports."""
    column: str
    """Feature column whose values (or bands) make the groups."""
    bands: list[float] | None = None
    """Numeric columns: ascending band edges; rows fall in ``[edge_i, edge_i+1)``, the last band is open-ended."""

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
    """The slicings compared (a feature column, with ``bands`` for a numeric one)."""
    min_rows: int = Field(default=200, ge=1)
    """A group with fewer holdout rows is reported but never decides."""
    min_positives: int = Field(default=30, ge=1)
    """A group with fewer frauds is reported but never decides."""
    metric: Literal["roc_auc", "pr_auc", "recall_at_threshold"] = "roc_auc"
    """Metric compared per supported group: ``roc_auc``, ``pr_auc`` or ``recall_at_threshold``."""
    tolerance: float = Field(default=0.02, ge=0)
    """Largest allowed drop of ``metric`` in a supported group."""
    confidence: float = Field(default=0.95, gt=0, lt=1)
    """A drop beyond the tolerance rejects only when the paired bootstrap interval of candidate minus champion on the
    group's rows lies below zero at this confidence.
    """
    bootstrap_samples: int = Field(default=500, ge=0)
    """Resamples of that interval; 0: the tolerance alone decides."""
    fairness_attribute: str | None = None
    """Slice name whose groups get fairlearn's demographic-parity and equalized-odds differences."""

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
    """Metric the candidate must improve: ``roc_auc`` or ``pr_auc``."""
    min_improvement: float = Field(ge=0)
    """The candidate must beat the champion by at least this on the primary metric."""
    absolute_floor: float = Field(ge=0, le=1)
    """Every candidate, the first one too, needs at least this primary metric to become champion."""
    guardrails: dict[str, float]
    """Metric name to the largest allowed drop against the champion."""
    slices: GateSlicesConfig = Field(default_factory=GateSlicesConfig)
    """Per-slice comparison of candidate and champion on the same holdout."""


class RegistryConfig(_Section):
    """How model versions are loaded from the registry (gate, scoring, shadow scoring)."""

    allow_pickled_models: bool = False
    """Unsafe: load old cloudpickled pyfunc versions (unpickling runs arbitrary code from the model store). Off, such a
    version is refused.
    """


class PromotionConfig(_Section):
    """How a challenger that passed the gate reaches traffic, and the evidence a shadow needs (docs/promotion.md)."""

    policy: Literal["promote", "shadow_first"] = "promote"
    """``promote``: the gate moves ``champion`` itself; ``shadow_first``: the winner gets alias ``shadow``, is judged on
    matured labels and promoted once a person approves.
    """
    min_days: int = Field(default=5, ge=1)
    """Matured days scored by both models before the shadow is judged."""
    min_positives: int = Field(default=200, ge=1)
    """Labelled frauds among those paired rows before the shadow is judged."""
    min_improvement: float = Field(default=0.0, ge=0)
    """The lower bound of the ROC AUC difference's interval must clear this for the shadow to win."""
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    """Confidence of the paired bootstrap interval of the ROC AUC difference."""
    bootstrap_samples: int = Field(default=1000, ge=100)
    """Resamples of that interval."""
    approval_timeout_hours: float = Field(default=72, gt=0)
    """An approval request nobody answers is retired after this."""
    approvers: list[str] = Field(default_factory=list)
    """Airflow user ids who may approve; empty: anyone allowed to answer the DAG."""
    retrain_at_label_maturity: bool = True
    """A pattern drift schedules its retraining for when the drifted night's labels matured, not at once."""
    max_shadow_days: int | None = Field(default=None, ge=1)
    """A shadow still without a verdict after this many compared days is retired as inconclusive; empty: never."""

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
    """In data time: hours of logical dates between two triggers, so backfills behave as nights would."""
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


class LineageConfig(_Section):
    """OpenLineage: the dataset namespace Loopline's events use, and the local event file.

    Where events go is Airflow's own setting (``[openlineage] transport``): the local stack writes them to
    ``events_file`` (file transport, no server); production sets an HTTP transport in its environment.
    """

    enabled: bool = True
    """Emit OpenLineage events; off, the stack turns the provider off."""
    namespace: str = Field(default="loopline", min_length=1)
    """Namespace of every Loopline dataset (landing, lake, analyst tables, models)."""
    events_file: str = "lineage/events.jsonl"
    """The local stack's file transport (JSON lines); production sets an HTTP transport in Airflow's ``[openlineage]
    transport``.
    """


class LooplineConfig(_Section):
    version: int
    """Version of the configuration format (1)."""
    storage: StorageConfig
    """Where landing drops, the lake and the reports live."""
    spark: SparkConfig
    """The Spark cluster and the local Spark Connect server."""
    postgres: PostgresConfig
    """The predictions database: schema, roles and connections."""
    mlflow: MlflowConfig
    """Tracking server, experiment and registered model."""
    features: FeaturesConfig
    """Feature windows and label maturity."""
    validation: ValidationConfig
    """The Great Expectations gates, the landing sensor and the bounds on landing files."""
    training: TrainingConfig
    """The trainer: model, window, runner, search."""
    gate: GateConfig
    """The champion/challenger gate."""
    scoring: ScoringConfig
    """Batch scoring: thresholds and reason codes."""
    drift: DriftConfig
    """The drift monitor: tests, segments, realized performance, the retraining trigger."""
    reference: ReferenceConfig
    """Reference data of the landing contract: what a valid transaction may contain."""
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    """Where each input comes from."""
    retry: RetryConfig = Field(default_factory=RetryConfig)
    """Retries of every task whose failure may be transient."""
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    """How model versions are loaded from the registry."""
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    """How a challenger that passed the gate reaches traffic."""
    backfill: BackfillConfig = Field(default_factory=BackfillConfig)
    """Range backfills."""
    alerts: AlertsConfig = Field(default_factory=lambda: AlertsConfig(channels=[FileChannel(type="file")]))
    """Failure, lateness and drift alerts."""
    lineage: LineageConfig = Field(default_factory=LineageConfig)
    """OpenLineage events."""

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

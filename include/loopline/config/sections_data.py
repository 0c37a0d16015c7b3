"""Sections of the data path: features, FX rates, reference data, sources, validation gates and backfills."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from loopline.config.base import _IDENTIFIER, _WINDOW, _Section

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
    """Days of a range backfill's first chunk: the days it ingests in one Spark pass and featurises in another
    (the Spark session's cache is cleared between chunks). Later chunks are sized by ``chunk_rows``. More days
    save more per-job overhead and hold more rows in one job: size it so a chunk's days, with the feature
    windows' history, fit the Spark server's memory.
    """
    chunk_rows: int = Field(default=1_500_000, ge=0)
    """Transactions a later chunk holds: as many days as this many rows make at the rows per day the range has
    published so far, from 1 to ``max_chunk_days`` (small days share fewer, larger passes; large days are
    split). 0: every chunk has ``chunk_days``."""
    max_chunk_days: int = Field(default=31, ge=1, le=366)
    """Most days in one chunk, however small the days (the first chunk's ``chunk_days`` included)."""
    max_days: int = Field(default=731, ge=1)
    """Longest range accepted at once; a longer one is refused (split it)."""
    cascade: bool = True
    """A range that re-ingests days that later published days depend on recomputes those days too (corrections)."""
    daily_wait_seconds: int = Field(default=21600, ge=1)
    """How long ``feature_pipeline``'s run for a day waits (``wait_for_range_backfill``, checked every
    ``validation.sensor_poke_seconds``) while a running range backfill holds that day, before it fails naming the
    range."""

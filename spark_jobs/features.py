"""Build one day's per-transaction features from the raw layer and a rolling per-day state.

No leakage: a transaction's features use only transactions strictly before its event time (the previous
days through a rolling state, the same day through windows that end one second before it) and only labels
reported before ``ds``. The cost does not grow with the length of history: the job reads the day's raw
partition, the previous day's (for the hour windows across midnight), yesterday's state and the few
daily aggregate partitions that enter or leave the windows, never months of transactions.

The rolling state partition ``ds=D`` holds the history available to day D, in three narrow tables:

- ``state/customer_window``: per customer and country, the counts and whole-cent sums of every day window of
  ``features.windows`` (days D-n..D-1 for ``nd``), the last transaction time and a bitmap of active days;
- ``state/customer_merchants``: per customer and merchant bought from in the long window, the days bitmap
  (the new-merchant flag);
- ``state/merchant_risk_window``: per merchant, the labels reported in days D-risk..D-1.

Each is advanced from its ``D-1`` partition: ``state(D) = state(D-1) + agg(D-1) - agg(D-1-n)`` (out of the
``nd`` sums, for each day window); the bitmaps shift by a day, which is all the merchants table needs. A range
backfill's chunk (:func:`run_days`) instead rebuilds the states of all its days at once from the daily
aggregates of their windows, then builds their features in one pass.
Sums are integers (cents), so an advanced state equals one rebuilt from the daily aggregates exactly, and
the tables stay small: the customer totals stop growing once every active customer is in them, only the
bitmap-only merchants table grows with the window. Each partition records the aggregate versions of its
window; when yesterday's state is missing, was built with other windows or an older format, or any of its
days was re-ingested or backfilled since, the state is rebuilt from the daily aggregates instead (also what
the first days do).

Every window of ``features.windows`` gives ``cnt_<w>`` and ``sum_<w>``. Day windows are day-aligned: ``7d``
is the previous seven full days plus today before the transaction; hour windows (up to ``24h``) are exact
sliding windows over today and the previous day's transactions. The longest day window names the average
features (``avg_amount_30d`` ...).

    python -m spark_jobs.features --ds 2026-01-05
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from loopline import lake as tables
from loopline.config import LooplineConfig, get_config, resolve_uri
from loopline.lake import Lake
from loopline.landing import Landing
from loopline.schemas import FeatureSchema, feature_schema
from spark_jobs.common import FOR_DS, parse_args, print_result, read_days, session, write_days

log = logging.getLogger(__name__)

LONG_AGO_SECONDS = 30 * 86400.0  # "no earlier transaction in the window" as a finite, monotone value
NIGHT_HOURS = (0, 5)

MAX_MASK_DAYS = 62  # days_mask is a signed 64-bit bitmap
# Bump when a state's layout or meaning changes: older partitions are then rebuilt. 2: whole-cent longs
# instead of decimal(38,10) sums, totals per (customer, country) and seen merchants in their own table.
# 3: one count and cent sum per configured day window (cnt_<n>d, cents_<n>d) instead of short/long.
STATE_FORMAT = 3
# The customer state holds the window totals per customer and country (a few rows per customer, so it stops
# growing once every active customer is in it); the pairs a customer has bought from, which grow with the
# window, sit in a narrow table of their own that only needs a days bitmap.
CUSTOMER_KEY = ("customer_id", "country")
MERCHANTS_KEY = ("customer_id", "merchant_id")
RISK_KEY = ("merchant_id", "merchant_category")
HISTORY_SCHEMA = (
    "customer_id string, merchant_id string, country string, cnt long, amount_cents long, amount_cents_sq long, "
    "last_event_time timestamp, ds date"
)
LABEL_SCHEMA = "merchant_id string, merchant_category string, n_labels long, n_fraud long, ds date"
MERCHANTS_STATE_SCHEMA = "customer_id string, merchant_id string, days_mask long"
RISK_STATE_SCHEMA = "merchant_id string, merchant_category string, n_labels long, n_fraud long"


class HistoryIncomplete(RuntimeError):
    """Earlier days that have a landing drop are missing from the lake: features would be wrong."""


@dataclass(frozen=True)
class FeatureWindows:
    """``features.windows`` (``labels``, in configuration order) and the label window of the risk rates."""

    labels: tuple[str, ...]
    risk_days: int = 90

    @property
    def hours(self) -> dict[str, int]:
        """The sliding windows: label -> hours."""
        return {w: int(w[:-1]) for w in self.labels if w.endswith("h")}

    @property
    def days(self) -> dict[str, int]:
        """The day-aligned windows: label -> days."""
        return {w: int(w[:-1]) for w in self.labels if w.endswith("d")}

    @property
    def day_counts(self) -> tuple[int, ...]:
        """The day windows' lengths, ascending: the customer state keeps one count and sum per length."""
        return tuple(sorted(self.days.values()))

    @property
    def long_days(self) -> int:
        return max(self.days.values())

    @property
    def schema(self) -> FeatureSchema:
        return feature_schema(self.labels)

    @classmethod
    def from_config(cls, cfg: LooplineConfig) -> FeatureWindows:
        return cls(tuple(cfg.features.windows), cfg.features.risk_window_days)


def _seconds(column: str) -> Column:
    return F.col(column).cast("long")


# ---------------------------------------------------------------------------------------------------------
# The rolling state: pure DataFrame functions.


def _check_windows(window_days: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """The day windows, ascending and distinct, each of 1..MAX_MASK_DAYS days."""
    days = tuple(sorted(window_days))
    if not days or len(set(days)) != len(days) or not 1 <= days[0] <= days[-1] <= MAX_MASK_DAYS:
        raise ValueError(f"day windows must be distinct and within 1..{MAX_MASK_DAYS} days, got {list(window_days)}")
    return days


def state_columns(window_days: tuple[int, ...] | list[int]) -> list[str]:
    """The customer state's value columns: per day window ``n``, ``cnt_<n>d`` and ``cents_<n>d``; then the
    long window's sum of squared cents, the last transaction time and the days bitmap."""
    per_window = [name for n in _check_windows(window_days) for name in (f"cnt_{n}d", f"cents_{n}d")]
    return [*per_window, "cents_sq_long", "last_event_time", "days_mask"]


def _long(value: int = 0) -> Column:
    return F.lit(value).cast("long")


def _day_bit(offset: Column) -> Column:
    """Bit ``offset - 1`` of a days bitmap: bit ``i`` is day ``ds - 1 - i``."""
    return F.shiftleft(_long(1), offset - 1)


def _shift(mask: str, long_days: int) -> Column:
    """A days bitmap one day later: every day moves one bit up, the day leaving the window falls off."""
    return F.shiftleft(F.col(mask), 1).bitwiseAND(_long((1 << long_days) - 1))


def _daily_totals(daily: DataFrame) -> DataFrame:
    """One day's ``customer_daily`` rows summed per customer and country."""
    return daily.groupBy(*CUSTOMER_KEY).agg(
        F.sum("cnt").alias("cnt"),
        F.sum("amount_cents").alias("amount_cents"),
        F.sum("amount_cents_sq").alias("amount_cents_sq"),
        F.max("last_event_time").alias("last_event_time"),
    )


def _contribution(daily: DataFrame, window_days: tuple[int, ...], *, leaving: int | None) -> DataFrame:
    """One day's ``customer_daily`` rows as state rows. ``leaving=None``: the day enters every window (its
    totals added to each, its last transaction time, the newest bit of the days bitmap); ``leaving=n``: the
    day leaves the ``n``-day window (its totals subtracted there only, and from the squares when ``n`` is the
    long window)."""
    day = _daily_totals(daily)
    long_days = window_days[-1]

    def sign(n: int) -> int:
        return 1 if leaving is None else (-1 if n == leaving else 0)

    values = []
    for n in window_days:
        values += [(F.col("cnt") * sign(n)).alias(f"cnt_{n}d"), (F.col("amount_cents") * sign(n)).alias(f"cents_{n}d")]
    return day.select(
        *CUSTOMER_KEY,
        *values,
        (F.col("amount_cents_sq") * sign(long_days)).alias("cents_sq_long"),
        (F.col("last_event_time") if leaving is None else F.lit(None).cast("timestamp")).alias("last_event_time"),
        _long(1 if leaving is None else 0).alias("days_mask"),
    )


def _sums(window_days: tuple[int, ...]) -> list[Column]:
    return [F.sum(name).alias(name) for n in window_days for name in (f"cnt_{n}d", f"cents_{n}d")]


Served = dt.date | DataFrame  # one day, or a frame of days (a ``for_ds`` date column) built in one pass


def _served(history: DataFrame, ds: Served) -> tuple[DataFrame, Column, list[str]]:
    """Daily rows (a ``ds`` date column) against the day(s) they serve: the rows, each row's offset (days from
    its day to the served day) and the extra grouping key. For a frame of days every row meets every served
    day (the window filter keeps the pairs that count), and the results are grouped per ``for_ds``."""
    if isinstance(ds, dt.date):
        return history, F.datediff(F.lit(ds), F.col("ds")), []
    return history.crossJoin(F.broadcast(ds.select(FOR_DS))), F.datediff(F.col(FOR_DS), F.col("ds")), [FOR_DS]


def state_from_aggregates(history: DataFrame, ds: Served, *, window_days: tuple[int, ...] | list[int]) -> DataFrame:
    """The customer state of ``ds`` rebuilt from daily ``customer_daily`` rows (with a ``ds`` date column):
    per customer and country, counts and cent sums of days ``ds - n .. ds - 1`` for each ``n`` of
    ``window_days``, the long window's sum of squares, the last transaction time and the days bitmap.
    ``ds`` a frame of days: the state of each, with its ``for_ds``."""
    days = _check_windows(window_days)
    rows, offset, by = _served(history, ds)
    window = rows.where((offset >= 1) & (offset <= days[-1]))
    values = []
    for n in days:
        inside = offset <= n
        values += [
            F.sum(F.when(inside, F.col("cnt")).otherwise(_long())).alias(f"cnt_{n}d"),
            F.sum(F.when(inside, F.col("amount_cents")).otherwise(_long())).alias(f"cents_{n}d"),
        ]
    return window.groupBy(*by, *CUSTOMER_KEY).agg(
        *values,
        F.sum("amount_cents_sq").alias("cents_sq_long"),
        F.max("last_event_time").alias("last_event_time"),
        F.bit_or(_day_bit(offset)).alias("days_mask"),
    )


def advance_state(
    previous: DataFrame,
    added: DataFrame | None,
    leaving: dict[int, DataFrame | None],
    *,
    window_days: tuple[int, ...] | list[int],
) -> DataFrame:
    """``state(D)`` from ``state(D-1)``: add ``agg(D-1)`` (``added``) to every window and take
    ``agg(D-1-n)`` (``leaving[n]``) out of each ``n``-day window.

    The aggregates are ``customer_daily`` partitions (None for a day without one). Every day shifts the
    ``days_mask`` by one; keys whose mask becomes empty had no activity left in the window and are dropped
    (their counts and sums are then exactly 0). ``last_event_time`` only needs a max: a day leaves the window
    only after every later day of the key.
    """
    days = _check_windows(window_days)
    columns = state_columns(days)
    parts = [
        previous.select(*CUSTOMER_KEY, *columns[:-1], _shift("days_mask", days[-1]).alias("days_mask")),
    ]
    if added is not None:
        parts.append(_contribution(added, days, leaving=None))
    for n in days:
        if leaving.get(n) is not None:
            parts.append(_contribution(leaving[n], days, leaving=n))  # type: ignore[arg-type]
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    grouped = union.groupBy(*CUSTOMER_KEY).agg(
        *_sums(days),
        F.sum("cents_sq_long").alias("cents_sq_long"),
        F.max("last_event_time").alias("last_event_time"),
        F.bit_or("days_mask").alias("days_mask"),
    )
    return grouped.where(F.col("days_mask") != 0)


def merchants_from_aggregates(history: DataFrame, ds: Served, *, long_days: int) -> DataFrame:
    """The merchants each customer bought from in days ``ds - long_days .. ds - 1``, with the days bitmap
    (``ds`` a frame of days: per ``for_ds``)."""
    _check_windows([long_days])
    rows, offset, by = _served(history, ds)
    window = rows.where((offset >= 1) & (offset <= long_days))
    return window.groupBy(*by, *MERCHANTS_KEY).agg(F.bit_or(_day_bit(offset)).alias("days_mask"))


def advance_merchants(previous: DataFrame, added: DataFrame | None, *, long_days: int) -> DataFrame:
    """``merchants(D)`` from ``merchants(D-1)`` and ``agg(D-1)``: the bitmap shift drops the day leaving the
    window, so nothing is subtracted and no older aggregate is read."""
    _check_windows([long_days])
    union = previous.select(*MERCHANTS_KEY, _shift("days_mask", long_days).alias("days_mask"))
    if added is not None:
        union = union.unionByName(added.select(*MERCHANTS_KEY, _long(1).alias("days_mask")))
    grouped = union.groupBy(*MERCHANTS_KEY).agg(F.bit_or("days_mask").alias("days_mask"))
    return grouped.where(F.col("days_mask") != 0)


def risk_state_from_aggregates(merchant_labels: DataFrame, ds: Served, *, risk_days: int) -> DataFrame:
    """The merchant risk state of ``ds``: labels per merchant reported in days ``ds - risk_days .. ds - 1``
    (``ds`` a frame of days: per ``for_ds``)."""
    rows, offset, by = _served(merchant_labels, ds)
    window = rows.where((offset >= 1) & (offset <= risk_days))
    return _finish_risk_state(window.select(*by, *RISK_KEY, "n_labels", "n_fraud"), by)


def advance_risk_state(previous: DataFrame, added: DataFrame | None, left: DataFrame | None) -> DataFrame:
    """``risk(D) = risk(D-1) + merchant_label_daily(D-1) - merchant_label_daily(D-1-risk_days)``."""
    union = previous.select(*RISK_KEY, "n_labels", "n_fraud")
    if added is not None:
        union = union.unionByName(added.select(*RISK_KEY, "n_labels", "n_fraud"))
    if left is not None:
        union = union.unionByName(
            left.select(*RISK_KEY, (-F.col("n_labels")).alias("n_labels"), (-F.col("n_fraud")).alias("n_fraud"))
        )
    return _finish_risk_state(union)


def _finish_risk_state(rows: DataFrame, by: list[str] | None = None) -> DataFrame:
    grouped = rows.groupBy(*(by or []), *RISK_KEY).agg(
        F.sum(F.col("n_labels").cast("long")).alias("n_labels"), F.sum(F.col("n_fraud").cast("long")).alias("n_fraud")
    )
    # A merchant without labels in the window gets the global rate, present or not: drop it.
    return grouped.where(F.col("n_labels") != 0)


# ---------------------------------------------------------------------------------------------------------
# Features: pure DataFrame functions.


def customer_windows(state: DataFrame, window_days: tuple[int, ...] | list[int], by: tuple[str, ...] = ()) -> DataFrame:
    """Per customer, from the customer state: count and sum of each day window (``h_cnt_<n>d``,
    ``h_sum_<n>d``), the long window's sum of squares for a z-score, the last transaction time, days since
    first seen in the window, home country. ``by``: keys the state is also split by (``for_ds``)."""
    days = _check_windows(window_days)
    values = []
    for n in days:
        values += [F.sum(f"cnt_{n}d").alias(f"h_cnt_{n}d"), (F.sum(f"cents_{n}d") / 100.0).alias(f"h_sum_{n}d")]
    per_customer = state.groupBy(*by, "customer_id").agg(
        *values,
        (F.sum("cents_sq_long") / 10_000.0).alias("h_sumsq_long"),
        F.max("last_event_time").alias("h_last_event_time"),
        # highest set bit + 1 = days from the first active day in the window to ds
        F.max(F.length(F.bin("days_mask"))).alias("h_history_days"),
    )
    ranked = state.withColumn(
        "rank",
        F.row_number().over(Window.partitionBy(*by, "customer_id").orderBy(F.desc(f"cnt_{days[-1]}d"), "country")),
    )
    home = ranked.where("rank = 1").select(*by, "customer_id", F.col("country").alias("home_country"))
    return per_customer.join(home, [*by, "customer_id"], "left")


def risk_rates(
    merchant_labels: DataFrame, prior_strength: float, by: tuple[str, ...] = ()
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Smoothed fraud rates per merchant and per category from labels already reported, and the global rate
    (``global_rate``), each per ``by`` (``for_ds``: one set per served day).

    rate = (frauds + k * global_rate) / (labels + k): few labels pull a merchant towards the global rate.
    """
    totals = merchant_labels.groupBy(*by).agg(F.sum("n_labels").alias("n"), F.sum("n_fraud").alias("f"))
    rate = F.coalesce(F.col("f"), _long()).cast("double") / F.col("n").cast("double")
    global_rates = totals.select(*by, F.when(F.col("n") != 0, rate).otherwise(F.lit(0.0)).alias("global_rate"))
    k = F.lit(prior_strength)

    def smoothed(keys: list[str], name: str) -> DataFrame:
        grouped = merchant_labels.groupBy(*by, *keys).agg(F.sum("n_labels").alias("n"), F.sum("n_fraud").alias("f"))
        with_global = grouped.join(F.broadcast(global_rates), list(by)) if by else grouped.crossJoin(global_rates)
        return with_global.select(
            *by,
            *keys,
            ((F.col("f") + k * F.col("global_rate")) / (F.col("n") + k)).alias(name),
            F.col("n").alias(f"{name}_labels"),
        )

    return smoothed(["merchant_id"], "merchant_risk"), smoothed(["merchant_category"], "category_risk"), global_rates


def build_features(
    today: DataFrame,
    previous_day: DataFrame | None,
    customer_state: DataFrame,
    merchants_state: DataFrame,
    risk_state: DataFrame,
    ds: dt.date,
    *,
    windows: FeatureWindows | None = None,
    prior_strength: float = 50.0,
) -> DataFrame:
    """Features for every transaction of ``today``: the columns of ``windows.schema`` (default: the
    configured ``features.windows``), ``cnt_<w>``/``sum_<w>`` for each window.

    ``customer_state`` is the customer state of ``ds`` (:func:`state_from_aggregates` /
    :func:`advance_state`: the windows of days before ``ds``), ``merchants_state`` the merchants each customer
    bought from in the long window (:func:`merchants_from_aggregates` / :func:`advance_merchants`),
    ``risk_state`` the label counts per merchant
    reported in the risk window before ``ds``, ``previous_day`` the raw transactions of ``ds - 1`` (for
    windows that cross midnight). One day of :func:`build_features_days`.
    """
    transactions = today.withColumn("ds", F.lit(ds))
    if previous_day is not None:
        transactions = transactions.unionByName(previous_day.withColumn("ds", F.lit(ds - dt.timedelta(days=1))))
    served = F.lit(ds).alias(FOR_DS)
    built = build_features_days(
        transactions,
        customer_state.select(served, "*"),
        merchants_state.select(served, "*"),
        risk_state.select(served, "*"),
        [ds],
        windows=windows,
        prior_strength=prior_strength,
    )
    return built.drop(FOR_DS)


def build_features_days(
    transactions: DataFrame,
    customer_state: DataFrame,
    merchants_state: DataFrame,
    risk_state: DataFrame,
    days: list[dt.date],
    *,
    windows: FeatureWindows | None = None,
    prior_strength: float = 50.0,
) -> DataFrame:
    """Features for every transaction of ``days`` in one pass, each row with the day it belongs to
    (``for_ds``): per day exactly what that day alone gives (the hour windows see the day and the previous
    day's tail, the day-aligned windows and flags the day's own earlier transactions and its state).

    ``transactions``: raw transactions (a ``ds`` date column) of ``days`` and of the day before the first;
    the states: each day's (:func:`state_from_aggregates` with a frame of days), with its ``for_ds``.
    """
    txn_cols = [
        "transaction_id",
        "customer_id",
        "merchant_id",
        "merchant_category",
        "event_time",
        "amount_eur",
        "channel",
        "country",
        "card_present",
    ]
    windows = windows or FeatureWindows.from_config(get_config())
    hours, day_windows, schema = windows.hours, windows.days, windows.schema
    served = F.col(FOR_DS).isin(*days)
    current = transactions.select(F.col("ds").alias(FOR_DS), *txn_cols).where(served)
    # A day's sliding windows reach this far into the previous day: those rows serve the next day too.
    reach = max(hours.values(), default=0)
    midnight = F.concat(F.col(FOR_DS).cast("string"), F.lit("T00:00:00Z")).cast("timestamp")
    tail = (
        transactions.select(F.date_add(F.col("ds"), 1).alias(FOR_DS), *txn_cols)
        .where(served)
        .where(F.col("event_time") >= midnight - F.expr(f"INTERVAL {reach} HOURS"))
    )
    recent = current.withColumn("is_today", F.lit(True)).unionByName(tail.withColumn("is_today", F.lit(False)))

    ts = _seconds("event_time")
    # Sums run over whole cents (as the daily aggregates): a long sum is exact in any order, where a double sum
    # depends on the order of transactions that share a second, which Spark does not fix.
    recent = recent.withColumn("ts", ts).withColumn("cents", F.round(F.col("amount_eur") * 100).cast("long"))
    by_time = Window.partitionBy(FOR_DS, "customer_id").orderBy("ts")
    before = by_time.rangeBetween(Window.unboundedPreceding, -1)
    today_only = F.when(F.col("is_today"), F.col("cents"))
    for label, n in hours.items():  # exact sliding windows ending one second before the transaction
        frame = by_time.rangeBetween(-3600 * n, -1)
        recent = recent.withColumn(f"cnt_{label}", F.count("ts").over(frame)).withColumn(
            f"sum_{label}", F.coalesce(F.sum("cents").over(frame), _long()) / 100.0
        )
    sliding = (
        recent.withColumn("prev_ts", F.max("ts").over(before))
        # today before this transaction: feeds the day-aligned windows and the novelty flags
        .withColumn("t_cnt", F.count(today_only).over(before))
        .withColumn("t_sum", F.coalesce(F.sum(today_only).over(before), _long()) / 100.0)
        .withColumn("t_sumsq", F.coalesce(F.sum(today_only * today_only).over(before), _long()) / 10_000.0)
        .withColumn(
            "seen_merchant_today",
            F.count(F.when(F.col("is_today"), 1)).over(
                Window.partitionBy(FOR_DS, "customer_id", "merchant_id")
                .orderBy("ts")
                .rangeBetween(Window.unboundedPreceding, -1)
            )
            > 0,
        )
        .withColumn(
            "seen_country_today",
            F.count(F.when(F.col("is_today"), 1)).over(
                Window.partitionBy(FOR_DS, "customer_id", "country")
                .orderBy("ts")
                .rangeBetween(Window.unboundedPreceding, -1)
            )
            > 0,
        )
        .where("is_today")
    )

    by = (FOR_DS,)
    per_customer = customer_windows(customer_state, windows.day_counts, by)
    seen_merchants = merchants_state.select(FOR_DS, *MERCHANTS_KEY, F.lit(True).alias("h_merchant"))
    seen_countries = customer_state.select(FOR_DS, *CUSTOMER_KEY, F.lit(True).alias("h_country"))
    merchant_risk, category_risk, global_rates = risk_rates(risk_state, prior_strength, by)

    joined = (
        sliding.join(per_customer, [FOR_DS, "customer_id"], "left")
        .join(seen_merchants, [FOR_DS, "customer_id", "merchant_id"], "left")
        .join(seen_countries, [FOR_DS, "customer_id", "country"], "left")
        .join(F.broadcast(merchant_risk), [FOR_DS, "merchant_id"], "left")
        .join(F.broadcast(category_risk), [FOR_DS, "merchant_category"], "left")
        .join(F.broadcast(global_rates), [FOR_DS], "left")
    )
    global_rate = F.coalesce(F.col("global_rate"), F.lit(0.0))  # a day without labels in the risk window
    long_days = windows.long_days
    cnt_long = F.coalesce(F.col(f"h_cnt_{long_days}d"), F.lit(0)) + F.col("t_cnt")
    sum_long = F.coalesce(F.col(f"h_sum_{long_days}d"), F.lit(0.0)) + F.col("t_sum")
    sumsq_long = F.coalesce(F.col("h_sumsq_long"), F.lit(0.0)) + F.col("t_sumsq")
    # try_divide: ANSI mode evaluates shared sub-expressions eagerly, so guard the division itself
    avg_long = F.try_divide(sum_long, cnt_long)
    std_long = F.sqrt(F.greatest(F.try_divide(sumsq_long, cnt_long) - avg_long * avg_long, F.lit(0.0)))
    last_ts = F.greatest(F.col("prev_ts"), _seconds("h_last_event_time"))
    hour = F.hour("event_time")
    velocity = []
    for label in windows.labels:
        if label in hours:
            velocity += [F.col(f"cnt_{label}").cast("int").alias(f"cnt_{label}"), F.col(f"sum_{label}")]
        else:
            n = day_windows[label]
            velocity += [
                (F.coalesce(F.col(f"h_cnt_{n}d"), F.lit(0)) + F.col("t_cnt")).cast("int").alias(f"cnt_{label}"),
                (F.coalesce(F.col(f"h_sum_{n}d"), F.lit(0.0)) + F.col("t_sum")).alias(f"sum_{label}"),
            ]
    features = joined.select(
        FOR_DS,
        "transaction_id",
        "customer_id",
        "merchant_id",
        "event_time",
        "channel",
        "merchant_category",
        "country",
        F.col("amount_eur").cast("double").alias("amount_eur"),
        F.log1p("amount_eur").alias("log_amount"),
        hour.alias("hour_of_day"),
        F.dayofweek("event_time").alias("day_of_week"),
        hour.between(*NIGHT_HOURS).cast("int").alias("is_night"),
        F.col("card_present").cast("int").alias("card_present"),
        (F.col("home_country").isNotNull() & (F.col("country") != F.col("home_country")))
        .cast("int")
        .alias("is_foreign"),
        *velocity,
        *(
            column.alias(name)
            for column, name in zip(
                (
                    F.when(cnt_long > 0, avg_long).otherwise(F.col("amount_eur")),
                    F.when(cnt_long > 0, F.try_divide(F.col("amount_eur"), avg_long)).otherwise(F.lit(1.0)),
                    F.when(
                        (cnt_long > 1) & (std_long > 0), F.try_divide(F.col("amount_eur") - avg_long, std_long)
                    ).otherwise(F.lit(0.0)),
                ),
                schema.average_columns,
                strict=True,
            )
        ),
        F.least(
            F.coalesce((F.col("ts") - last_ts).cast("double"), F.lit(LONG_AGO_SECONDS)), F.lit(LONG_AGO_SECONDS)
        ).alias("seconds_since_last_txn"),
        (~(F.coalesce(F.col("h_merchant"), F.lit(False)) | F.col("seen_merchant_today")))
        .cast("int")
        .alias("is_new_merchant"),
        (~(F.coalesce(F.col("h_country"), F.lit(False)) | F.col("seen_country_today")))
        .cast("int")
        .alias("is_new_country"),
        F.coalesce(F.col("h_history_days"), F.lit(0)).alias("customer_history_days"),
        F.coalesce(F.col("merchant_risk"), global_rate).alias("merchant_risk"),
        F.coalesce(F.col("category_risk"), global_rate).alias("category_risk"),
        F.coalesce(F.col("merchant_risk_labels"), F.lit(0)).cast("long").alias("merchant_label_count"),
    )
    return features.select(FOR_DS, *schema.columns)


def check_history(lake: Lake, landing: Landing, days: list[dt.date]) -> None:
    """Fail when an earlier day has a complete landing drop but no committed aggregates in the lake.

    Days without any drop are simply before the data's start. This is what makes an out-of-order backfill
    safe: it stops with instructions instead of computing features over a hole in the history.
    """
    present = lake.partitions(tables.CUSTOMER_DAILY, days)
    holes = [day for day in days if day not in present and landing.is_complete("transactions", str(day))]
    if holes:
        listed = ", ".join(str(day) for day in holes[:10]) + (" ..." if len(holes) > 10 else "")
        raise HistoryIncomplete(
            f"{len(holes)} earlier day(s) have a landing drop but were never ingested: {listed}. "
            "Run feature_pipeline for them first (a backfill runs days in order), then rerun this day."
        )


def _current(frame: DataFrame, table: str, day: dt.date) -> DataFrame:
    """``frame`` when it has the columns this job needs; aggregates written by an older ingest do not."""
    if table == tables.CUSTOMER_DAILY and "amount_cents" not in frame.columns:
        raise HistoryIncomplete(
            f"{table} near ds={day} was written by an older ingest (no amount_cents column): re-ingest the "
            "earlier days (airflow backfill create --dag-id feature_pipeline ... --reprocess-behavior "
            "completed) or start from a clean lake"
        )
    return frame


@dataclass(frozen=True)
class _StateSpec:
    """One rolling state table: the daily table it rolls up, its window and how to build or advance it."""

    table: str
    source: str
    window_days: int
    params: dict


def _stale_reason(lake: Lake, spec: _StateSpec, ds: dt.date, versions: dict[dt.date, str | None]) -> str | None:
    """Why ``state(ds-1)`` cannot be advanced to ``ds`` (None when it can).

    ``versions`` are the source's current versions of days ``ds-1-window .. ds-1``; ``state(ds-1)`` recorded
    those of ``ds-1-window .. ds-2`` when it was built. Any difference (a re-ingested day, a late backfill of
    a day that had none, a day whose partition went away) means its content no longer matches the lake.
    """
    previous = ds - dt.timedelta(days=1)
    if lake.current_version(spec.table, previous) is None:
        return f"no {spec.table} for {previous}"
    stats = lake.stats(spec.table, previous)
    if stats.get("format") != STATE_FORMAT or stats.get("params") != spec.params:
        return f"{spec.table} for {previous} was built with {stats.get('params')} (format {stats.get('format')})"
    recorded = stats.get("sources", {})
    changed = [
        str(day)
        for day in tables.day_range(previous - dt.timedelta(days=spec.window_days), previous - dt.timedelta(days=1))
        if str(day) not in recorded or recorded[str(day)] != versions[day]
    ]
    if changed:
        return f"{spec.source} changed since {spec.table} for {previous} was built: {', '.join(changed[:10])}"
    return None


def _update_state(
    spark: SparkSession, lake: Lake, spec: _StateSpec, ds: dt.date, *, advance, rebuild, force_rebuild: bool
) -> dict:
    """Advance ``state(ds-1)`` or rebuild the state of ``ds``, write it as a new version and commit it.

    ``advance(previous, added, leaving)`` and ``rebuild(history)`` are the pure functions; ``leaving`` maps
    a day offset before ``ds-1`` to that day's aggregate (None when the day has no partition).
    """
    window = tables.day_range(ds - dt.timedelta(days=spec.window_days + 1), ds - dt.timedelta(days=1))
    versions = {day: lake.current_version(spec.source, day) for day in window}
    reason = "rebuild requested" if force_rebuild else _stale_reason(lake, spec, ds, versions)

    def read(day: dt.date) -> DataFrame | None:
        version = versions[day]
        return (
            _current(spark.read.parquet(lake.version_uri(spec.source, day, version)), spec.source, day)
            if version
            else None
        )

    previous_day = ds - dt.timedelta(days=1)
    if reason is None:
        path = "incremental"
        previous = spark.read.parquet(lake.partition(spec.table, previous_day))  # type: ignore[arg-type]
        state = advance(previous, read(previous_day), lambda back: read(previous_day - dt.timedelta(days=back)))
    else:
        path = "rebuilt"
        history = read_days(spark, lake, spec.source, {day: versions[day] for day in window[1:]})
        state = rebuild(_current(history, spec.source, previous_day) if history is not None else None)
    version = tables.new_version()
    uri = lake.version_uri(spec.table, ds, version)
    state.write.mode("overwrite").parquet(uri)
    sources = {str(day): versions[day] for day in window[1:]}  # days ds-window .. ds-1
    stats = {"format": STATE_FORMAT, "params": spec.params, "sources": sources, "path": path}
    if reason:
        stats["rebuilt_because"] = reason
    lake.commit(spec.table, ds, version, stats=stats)
    log.info("%s ds=%s: %s%s", spec.table, ds, path, f" ({reason})" if reason else "")
    return {"path": path, "version": version, "uri": uri, "reason": reason}


def _state_specs(windows: FeatureWindows) -> tuple[_StateSpec, _StateSpec, _StateSpec]:
    """The customer, customer-merchant and merchant risk state tables."""
    days, long, risk = windows.day_counts, windows.long_days, windows.risk_days
    return (
        _StateSpec(tables.STATE_CUSTOMER, tables.CUSTOMER_DAILY, long, {"window_days": list(days)}),
        _StateSpec(tables.STATE_CUSTOMER_MERCHANTS, tables.CUSTOMER_DAILY, long, {"long_days": long}),
        _StateSpec(tables.STATE_MERCHANT_RISK, tables.MERCHANT_LABEL_DAILY, risk, {"risk_days": risk}),
    )


def update_states(
    spark: SparkSession, lake: Lake, ds: dt.date, windows: FeatureWindows, *, force_rebuild: bool = False
) -> dict[str, dict]:
    """Commit the customer, customer-merchant and merchant risk states of ``ds``; returns, per state table,
    the path taken (``incremental`` | ``rebuilt``), the committed version and its URI.

    The states depend only on committed daily aggregates, so they are committed here, not behind the
    features gate; a rerun of ``ds`` commits a new version with the same content.
    """
    days, long, risk = windows.day_counts, windows.long_days, windows.risk_days
    customer, merchants, risk_spec = _state_specs(windows)

    def history(frame: DataFrame | None) -> DataFrame:
        return frame if frame is not None else spark.createDataFrame([], HISTORY_SCHEMA)

    def labels(frame: DataFrame | None) -> DataFrame:
        return frame if frame is not None else spark.createDataFrame([], LABEL_SCHEMA)

    return {
        customer.table: _update_state(
            spark,
            lake,
            customer,
            ds,
            advance=lambda previous, added, leaving: advance_state(
                previous, added, {n: leaving(n) for n in days}, window_days=days
            ),
            rebuild=lambda rows: state_from_aggregates(history(rows), ds, window_days=days),
            force_rebuild=force_rebuild,
        ),
        merchants.table: _update_state(
            spark,
            lake,
            merchants,
            ds,
            advance=lambda previous, added, _leaving: advance_merchants(previous, added, long_days=long),
            rebuild=lambda rows: merchants_from_aggregates(history(rows), ds, long_days=long),
            force_rebuild=force_rebuild,
        ),
        risk_spec.table: _update_state(
            spark,
            lake,
            risk_spec,
            ds,
            advance=lambda previous, added, leaving: advance_risk_state(previous, added, leaving(risk)),
            rebuild=lambda rows: risk_state_from_aggregates(labels(rows), ds, risk_days=risk),
            force_rebuild=force_rebuild,
        ),
    }


def run(spark: SparkSession, ds: dt.date, cfg: LooplineConfig | None = None, *, rebuild_state: bool = False) -> dict:
    """Commit the state of ``ds`` and write an uncommitted features version for it.

    Returns the features version and row count, and which path built each state (``state_path`` is
    ``incremental`` when both states were advanced from the previous day's, else ``rebuilt``).
    ``rebuild_state`` rebuilds the states from the daily aggregates even when the previous day's are valid.
    """
    cfg = cfg or get_config()
    lake = Lake(resolve_uri(cfg.storage.lake_uri))
    landing = Landing(resolve_uri(cfg.storage.landing_uri))
    windows = FeatureWindows.from_config(cfg)
    history_days = tables.day_range(ds - dt.timedelta(days=windows.long_days), ds - dt.timedelta(days=1))

    today_uri = lake.partition(tables.RAW_TRANSACTIONS, ds)
    if today_uri is None:
        raise RuntimeError(f"no committed raw transactions for ds={ds}: run the ingest for that day first")
    check_history(lake, landing, history_days)
    states = update_states(spark, lake, ds, windows, force_rebuild=rebuild_state)
    previous_uri = lake.partition(tables.RAW_TRANSACTIONS, ds - dt.timedelta(days=1))
    features = build_features(
        spark.read.parquet(today_uri),
        spark.read.parquet(previous_uri) if previous_uri else None,
        spark.read.parquet(states[tables.STATE_CUSTOMER]["uri"]),
        spark.read.parquet(states[tables.STATE_CUSTOMER_MERCHANTS]["uri"]),
        spark.read.parquet(states[tables.STATE_MERCHANT_RISK]["uri"]),
        ds,
        windows=windows,
        prior_strength=cfg.features.risk_prior_strength,
    )
    version = tables.new_version()
    uri = lake.version_uri(tables.FEATURES, ds, version)
    features.write.mode("overwrite").parquet(uri)
    rows = lake.arrow_dataset(uri).count_rows()  # from the Parquet footers: no Spark query
    paths = {table: state["path"] for table, state in states.items()}
    return {
        "ds": str(ds),
        "version": version,
        "uri": uri,
        "rows": rows,
        "state_path": "incremental" if set(paths.values()) == {"incremental"} else "rebuilt",
        "state": paths,
    }


def run_days(spark: SparkSession, days: list[dt.date], cfg: LooplineConfig | None = None) -> dict[dt.date, dict]:
    """:func:`run` for consecutive ``days`` in one pass (a range backfill's chunk): commit each day's states
    and write an uncommitted features version per day; returns :func:`run`'s result per day.

    Every day's raw layer must be committed. The states are rebuilt from the committed daily aggregates (the
    same content the daily run's advanced states hold, as integers), all days in one Spark job per state
    table, then the features of all days in one job: each day gets exactly the rows its own run gives.
    """
    cfg = cfg or get_config()
    lake = Lake(resolve_uri(cfg.storage.lake_uri))
    landing = Landing(resolve_uri(cfg.storage.landing_uri))
    windows = FeatureWindows.from_config(cfg)
    first, last = days[0], days[-1]
    if days != tables.day_range(first, last):
        raise ValueError(f"run_days needs consecutive days, got {[str(d) for d in days]}")
    missing = [str(day) for day in days if lake.current_version(tables.RAW_TRANSACTIONS, day) is None]
    if missing:
        raise RuntimeError(f"no committed raw transactions for ds={', '.join(missing)}: ingest those days first")
    check_history(
        lake, landing, tables.day_range(first - dt.timedelta(days=windows.long_days), first - dt.timedelta(days=1))
    )
    served = spark.createDataFrame([(day,) for day in days], f"{FOR_DS} date")
    empty = {tables.CUSTOMER_DAILY: HISTORY_SCHEMA, tables.MERCHANT_LABEL_DAILY: LABEL_SCHEMA}
    states: dict[str, dict[dt.date, str]] = {}
    for spec, build in zip(
        _state_specs(windows),
        (
            lambda rows: state_from_aggregates(rows, served, window_days=windows.day_counts),
            lambda rows: merchants_from_aggregates(rows, served, long_days=windows.long_days),
            lambda rows: risk_state_from_aggregates(rows, served, risk_days=windows.risk_days),
        ),
        strict=True,
    ):
        window = tables.day_range(first - dt.timedelta(days=spec.window_days), last - dt.timedelta(days=1))
        versions = {day: lake.current_version(spec.source, day) for day in window}
        history = read_days(spark, lake, spec.source, versions)
        rows = (
            _current(history, spec.source, first)
            if history is not None
            else spark.createDataFrame([], empty[spec.source])
        )
        states[spec.table] = write_days(build(rows), lake, spec.table, days)
        for day, version in states[spec.table].items():
            sources = {
                str(d): versions[d]
                for d in tables.day_range(day - dt.timedelta(days=spec.window_days), day - dt.timedelta(days=1))
            }
            stats = {"format": STATE_FORMAT, "params": spec.params, "sources": sources, "path": "rebuilt"}
            lake.commit(spec.table, day, version, stats=stats | {"rebuilt_because": "range backfill chunk"})

    def state(table: str) -> DataFrame:
        frame = read_days(spark, lake, table, states[table])
        return frame.withColumnRenamed("ds", FOR_DS)  # type: ignore[union-attr]

    raw = {
        d: lake.current_version(tables.RAW_TRANSACTIONS, d)
        for d in tables.day_range(first - dt.timedelta(days=1), last)
    }
    built = build_features_days(
        read_days(spark, lake, tables.RAW_TRANSACTIONS, raw),  # type: ignore[arg-type]
        state(tables.STATE_CUSTOMER),
        state(tables.STATE_CUSTOMER_MERCHANTS),
        state(tables.STATE_MERCHANT_RISK),
        days,
        windows=windows,
        prior_strength=cfg.features.risk_prior_strength,
    )
    results = {}
    for day, version in write_days(built, lake, tables.FEATURES, days).items():
        uri = lake.version_uri(tables.FEATURES, day, version)
        paths = {table: "rebuilt" for table in states}
        results[day] = {
            "ds": str(day),
            "version": version,
            "uri": uri,
            "rows": lake.arrow_dataset(uri).count_rows(),
            "state_path": "rebuilt",
            "state": paths,
        }
    return results


def publish(ds: dt.date, version: str, rows: int, cfg: LooplineConfig | None = None) -> str:
    """Commit the features version (after its gate passed); returns the committed partition URI."""
    cfg = cfg or get_config()
    lake = Lake(resolve_uri(cfg.storage.lake_uri))
    lake.commit(tables.FEATURES, ds, version, stats={"rows": rows})
    return lake.partition(tables.FEATURES, ds)  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    result = run(session(args.remote), args.ds)
    publish(args.ds, result["version"], result["rows"])
    print_result(result)


if __name__ == "__main__":
    main()

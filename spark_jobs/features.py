"""Build one day's per-transaction features from the raw layer and incremental daily aggregates.

No leakage: a transaction's features use only transactions strictly before its event time (the previous
days through their daily aggregates, the same day through windows that end one second before it) and only
labels reported before ``ds``. The cost does not grow with the length of history: the job reads the day's
raw partition, the previous day's (for the 1h/24h windows across midnight) and small daily aggregate
partitions for a fixed window, never months of transactions.

Windows of a day or more are day-aligned: ``7d`` is the previous seven full days plus today before the
transaction; ``1h`` and ``24h`` are exact sliding windows.

    python -m spark_jobs.features --ds 2026-01-05
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from loopline import lake as tables
from loopline.config import LooplineConfig, get_config, resolve_uri
from loopline.lake import Lake
from loopline.landing import Landing
from loopline.schemas import FEATURE_COLUMNS
from spark_jobs.common import parse_args, print_result, session

LONG_AGO_SECONDS = 30 * 86400.0  # "no earlier transaction in the window" as a finite, monotone value
NIGHT_HOURS = (0, 5)


class HistoryIncomplete(RuntimeError):
    """Earlier days that have a landing drop are missing from the lake: features would be wrong."""


def _seconds(column: str) -> Column:
    return F.col(column).cast("long")


def history_windows(history: DataFrame, ds: dt.date, short_days: int, long_days: int) -> DataFrame:
    """Per customer, from daily aggregates of the previous days: counts/sums over the short and long windows,
    the sum of squares for a z-score, the last transaction time, first day seen and home country."""
    day_offset = F.datediff(F.lit(ds), F.col("ds"))
    short = day_offset <= short_days
    per_customer = history.groupBy("customer_id").agg(
        F.sum(F.when(short, F.col("cnt")).otherwise(0)).alias("h_cnt_short"),
        F.sum(F.when(short, F.col("amount_sum")).otherwise(0.0)).alias("h_sum_short"),
        F.sum(F.when(day_offset <= long_days, F.col("cnt")).otherwise(0)).alias("h_cnt_long"),
        F.sum(F.when(day_offset <= long_days, F.col("amount_sum")).otherwise(0.0)).alias("h_sum_long"),
        F.sum(F.when(day_offset <= long_days, F.col("amount_sumsq")).otherwise(0.0)).alias("h_sumsq_long"),
        F.max("last_event_time").alias("h_last_event_time"),
        F.min("ds").alias("h_first_day"),
    )
    by_country = history.groupBy("customer_id", "country").agg(F.sum("cnt").alias("n"))
    ranked = by_country.withColumn(
        "rank", F.row_number().over(Window.partitionBy("customer_id").orderBy(F.desc("n"), "country"))
    )
    home = ranked.where("rank = 1").select("customer_id", F.col("country").alias("home_country"))
    return per_customer.join(home, "customer_id", "left")


def risk_rates(merchant_labels: DataFrame, prior_strength: float) -> tuple[DataFrame, DataFrame, float]:
    """Smoothed fraud rates per merchant and per category from labels already reported.

    rate = (frauds + k * global_rate) / (labels + k): few labels pull a merchant towards the global rate.
    """
    totals = merchant_labels.agg(F.sum("n_labels").alias("n"), F.sum("n_fraud").alias("f")).collect()[0]
    global_rate = float(totals["f"] or 0) / float(totals["n"]) if totals["n"] else 0.0
    k = F.lit(prior_strength)

    def smoothed(keys: list[str], name: str) -> DataFrame:
        grouped = merchant_labels.groupBy(*keys).agg(F.sum("n_labels").alias("n"), F.sum("n_fraud").alias("f"))
        return grouped.select(
            *keys,
            ((F.col("f") + k * F.lit(global_rate)) / (F.col("n") + k)).alias(name),
            F.col("n").alias(f"{name}_labels"),
        )

    return smoothed(["merchant_id"], "merchant_risk"), smoothed(["merchant_category"], "category_risk"), global_rate


def build_features(
    today: DataFrame,
    previous_day: DataFrame | None,
    history: DataFrame,
    merchant_labels: DataFrame,
    ds: dt.date,
    *,
    short_days: int = 7,
    long_days: int = 30,
    prior_strength: float = 50.0,
) -> DataFrame:
    """Features for every transaction of ``today``.

    ``history`` is the daily customer aggregates of days before ``ds`` (with a ``ds`` date column),
    ``merchant_labels`` the daily label counts reported before ``ds``, ``previous_day`` the raw
    transactions of ``ds - 1`` (for windows that cross midnight).
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
    current = today.select(*txn_cols).withColumn("is_today", F.lit(True))
    recent = current
    if previous_day is not None:
        tail = previous_day.where(
            F.col("event_time") >= F.lit(f"{ds}T00:00:00Z").cast("timestamp") - F.expr("INTERVAL 24 HOURS")
        )
        recent = current.unionByName(tail.select(*txn_cols).withColumn("is_today", F.lit(False)))

    ts = _seconds("event_time")
    recent = recent.withColumn("ts", ts)
    by_time = Window.partitionBy("customer_id").orderBy("ts")
    hour_window = by_time.rangeBetween(-3600, -1)
    day_window = by_time.rangeBetween(-86400, -1)
    before = by_time.rangeBetween(Window.unboundedPreceding, -1)
    today_only = F.when(F.col("is_today"), F.col("amount_eur"))
    sliding = (
        recent.withColumn("cnt_1h", F.count("ts").over(hour_window))
        .withColumn("sum_1h", F.coalesce(F.sum("amount_eur").over(hour_window), F.lit(0.0)))
        .withColumn("cnt_24h", F.count("ts").over(day_window))
        .withColumn("sum_24h", F.coalesce(F.sum("amount_eur").over(day_window), F.lit(0.0)))
        .withColumn("prev_ts", F.max("ts").over(before))
        # today before this transaction: feeds the day-aligned 7d/30d windows and the novelty flags
        .withColumn("t_cnt", F.count(today_only).over(before))
        .withColumn("t_sum", F.coalesce(F.sum(today_only).over(before), F.lit(0.0)))
        .withColumn("t_sumsq", F.coalesce(F.sum(today_only * today_only).over(before), F.lit(0.0)))
        .withColumn(
            "seen_merchant_today",
            F.count(F.when(F.col("is_today"), 1)).over(
                Window.partitionBy("customer_id", "merchant_id")
                .orderBy("ts")
                .rangeBetween(Window.unboundedPreceding, -1)
            )
            > 0,
        )
        .withColumn(
            "seen_country_today",
            F.count(F.when(F.col("is_today"), 1)).over(
                Window.partitionBy("customer_id", "country").orderBy("ts").rangeBetween(Window.unboundedPreceding, -1)
            )
            > 0,
        )
        .where("is_today")
    )

    windows = history_windows(history, ds, short_days, long_days)
    seen_merchants = history.select("customer_id", "merchant_id").distinct().withColumn("h_merchant", F.lit(True))
    seen_countries = history.select("customer_id", "country").distinct().withColumn("h_country", F.lit(True))
    merchant_risk, category_risk, global_rate = risk_rates(merchant_labels, prior_strength)

    joined = (
        sliding.join(windows, "customer_id", "left")
        .join(seen_merchants, ["customer_id", "merchant_id"], "left")
        .join(seen_countries, ["customer_id", "country"], "left")
        .join(F.broadcast(merchant_risk), "merchant_id", "left")
        .join(F.broadcast(category_risk), "merchant_category", "left")
    )
    cnt_long = F.coalesce(F.col("h_cnt_long"), F.lit(0)) + F.col("t_cnt")
    sum_long = F.coalesce(F.col("h_sum_long"), F.lit(0.0)) + F.col("t_sum")
    sumsq_long = F.coalesce(F.col("h_sumsq_long"), F.lit(0.0)) + F.col("t_sumsq")
    # try_divide: ANSI mode evaluates shared sub-expressions eagerly, so guard the division itself
    avg_long = F.try_divide(sum_long, cnt_long)
    std_long = F.sqrt(F.greatest(F.try_divide(sumsq_long, cnt_long) - avg_long * avg_long, F.lit(0.0)))
    last_ts = F.greatest(F.col("prev_ts"), _seconds("h_last_event_time"))
    hour = F.hour("event_time")
    features = joined.select(
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
        F.col("cnt_1h").cast("int").alias("cnt_1h"),
        F.col("sum_1h").alias("sum_1h"),
        F.col("cnt_24h").cast("int").alias("cnt_24h"),
        F.col("sum_24h").alias("sum_24h"),
        (F.coalesce(F.col("h_cnt_short"), F.lit(0)) + F.col("t_cnt")).cast("int").alias("cnt_7d"),
        (F.coalesce(F.col("h_sum_short"), F.lit(0.0)) + F.col("t_sum")).alias("sum_7d"),
        cnt_long.cast("int").alias("cnt_30d"),
        sum_long.alias("sum_30d"),
        F.when(cnt_long > 0, avg_long).otherwise(F.col("amount_eur")).alias("avg_amount_30d"),
        F.when(cnt_long > 0, F.try_divide(F.col("amount_eur"), avg_long))
        .otherwise(F.lit(1.0))
        .alias("amount_to_avg_30d"),
        F.when((cnt_long > 1) & (std_long > 0), F.try_divide(F.col("amount_eur") - avg_long, std_long))
        .otherwise(F.lit(0.0))
        .alias("amount_zscore_30d"),
        F.least(
            F.coalesce((F.col("ts") - last_ts).cast("double"), F.lit(LONG_AGO_SECONDS)), F.lit(LONG_AGO_SECONDS)
        ).alias("seconds_since_last_txn"),
        (~(F.coalesce(F.col("h_merchant"), F.lit(False)) | F.col("seen_merchant_today")))
        .cast("int")
        .alias("is_new_merchant"),
        (~(F.coalesce(F.col("h_country"), F.lit(False)) | F.col("seen_country_today")))
        .cast("int")
        .alias("is_new_country"),
        F.coalesce(F.datediff(F.lit(ds), F.col("h_first_day")), F.lit(0)).alias("customer_history_days"),
        F.coalesce(F.col("merchant_risk"), F.lit(global_rate)).alias("merchant_risk"),
        F.coalesce(F.col("category_risk"), F.lit(global_rate)).alias("category_risk"),
        F.coalesce(F.col("merchant_risk_labels"), F.lit(0)).cast("long").alias("merchant_label_count"),
    )
    return features.select(*FEATURE_COLUMNS)


def _read_days(spark: SparkSession, lake: Lake, table: str, days: list[dt.date]) -> DataFrame | None:
    """Committed partitions of ``days`` as one relation with a ``ds`` date column (None when there are none).

    One read over many paths with ``basePath``: Spark plans it once and takes ``ds`` from the path.
    """
    uris = [uri for _, uri in sorted(lake.partitions(table, days).items())]
    if not uris:
        return None
    frame = spark.read.option("basePath", lake.table_uri(table)).parquet(*uris)
    return frame.drop("run").withColumn("ds", F.col("ds").cast("date"))


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


def run(spark: SparkSession, ds: dt.date, cfg: LooplineConfig | None = None) -> dict:
    """Write an uncommitted features version for ``ds``; returns its version and row count."""
    cfg = cfg or get_config()
    lake = Lake(resolve_uri(cfg.storage.lake_uri))
    landing = Landing(resolve_uri(cfg.storage.landing_uri))
    windows = cfg.features.window_hours()
    long_days = max(hours for hours in windows.values()) // 24
    short_days = sorted(hours // 24 for hours in windows.values() if hours >= 24 * 2)[0]
    history_days = tables.day_range(ds - dt.timedelta(days=long_days), ds - dt.timedelta(days=1))
    risk_days = tables.day_range(ds - dt.timedelta(days=cfg.features.risk_window_days), ds - dt.timedelta(days=1))

    today_uri = lake.partition(tables.RAW_TRANSACTIONS, ds)
    if today_uri is None:
        raise RuntimeError(f"no committed raw transactions for ds={ds}: run the ingest for that day first")
    check_history(lake, landing, history_days)
    previous_uri = lake.partition(tables.RAW_TRANSACTIONS, ds - dt.timedelta(days=1))
    history = _read_days(spark, lake, tables.CUSTOMER_DAILY, history_days)
    if history is None:
        history = spark.createDataFrame(
            [],
            "customer_id string, merchant_id string, country string, cnt long, amount_sum double, "
            "amount_sumsq double, last_event_time timestamp, ds date",
        )
    merchant_labels = _read_days(spark, lake, tables.MERCHANT_LABEL_DAILY, risk_days)
    if merchant_labels is None:
        merchant_labels = spark.createDataFrame(
            [], "merchant_id string, merchant_category string, n_labels long, n_fraud long, ds date"
        )
    features = build_features(
        spark.read.parquet(today_uri),
        spark.read.parquet(previous_uri) if previous_uri else None,
        history,
        merchant_labels,
        ds,
        short_days=short_days,
        long_days=long_days,
        prior_strength=cfg.features.risk_prior_strength,
    )
    version = tables.new_version()
    uri = lake.version_uri(tables.FEATURES, ds, version)
    features.write.mode("overwrite").parquet(uri)
    rows = spark.read.parquet(uri).count()
    return {"ds": str(ds), "version": version, "uri": uri, "rows": rows}


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

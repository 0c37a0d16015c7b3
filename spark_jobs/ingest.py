"""Ingest one day's landing drop into the raw layer of the lake.

Reads the day's transactions and labels, enforces the landing contract row by row, normalises (UTC
timestamps, amounts in EUR), drops exact duplicates, and routes every row that breaks the contract to a
quarantine partition with its reason. Whole files that cannot be read row by row (empty, truncated gzip,
missing columns) are quarantined as files and counted. Writes new, uncommitted versions of the raw tables
and the daily aggregates derived from them; ``publish`` commits them once the GX gate has passed.
Quarantine partitions are committed before the gates (``run`` commits them at once; a range backfill each
day just before its gates): they are the evidence an operator triages with.

With an object-store landing and ``storage.stage_uri`` set, the day's data files are first copied to that
shared folder and Spark reads the copies (a Spark without hadoop-aws cannot read ``s3a://``); records and
logs still name the original ``s3://`` objects.

    python -m spark_jobs.ingest --ds 2026-01-05          # or spark-submit spark_jobs/ingest.py --ds ...
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import shutil
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, Observation, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from loopline import lake as tables
from loopline.config import LooplineConfig, ReferenceConfig, get_config, resolve_uri
from loopline.lake import Lake
from loopline.landing import DropChanged, FileCheck, Landing, ScanLimits, check_file
from loopline.reference import DayRates, rates_for_day, static_rates
from loopline.schemas import CARD_PRESENT_VALUES, LABEL_COLUMNS, MAX_FIELD_CHARS, TRANSACTION_COLUMNS
from spark_jobs.common import FOR_DS, parse_args, print_result, read_days, session, write_days

log = logging.getLogger(__name__)

CORRUPT = "_corrupt_record"
ISO_WITH_ZONE = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})$"
ISO_WITHOUT_ZONE = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?$"
DECIMAL = r"^-?\d{1,15}(\.\d{1,6})?$"
CONFLICTING_ID = "conflicting_duplicate_id"  # an id that arrived with different contents
LABEL_LOOKBACK_DAYS = 30  # labels arrive at most this many days after their transaction

# The typed columns a row's identity is made of (exact duplicates agree on all of them).
CONTENT_COLUMNS = {
    "transactions": (
        "transaction_id",
        "event_time",
        "customer_id",
        "merchant_id",
        "merchant_category",
        "amount",
        "currency",
        "amount_eur",
        "channel",
        "country",
        "card_present",
    ),
    "labels": ("transaction_id", "is_fraud", "reported_at"),
}

# Raw tables written (uncommitted) by ingest and committed together by publish.
RAW_LAYER = (
    tables.RAW_TRANSACTIONS,
    tables.RAW_LABELS,
    tables.LABELED_TRANSACTIONS,
    tables.CUSTOMER_DAILY,
    tables.MERCHANT_LABEL_DAILY,
)


class DropIncomplete(RuntimeError):
    """The day's drop has no ``_SUCCESS`` marker, or files changed after it: upstream is not done."""


@dataclass
class KindCounts:
    """Row accounting for one kind of file: every row read is written, dropped as a duplicate or quarantined."""

    files: int = 0
    files_quarantined: int = 0
    rows_read: int = 0
    rows_written: int = 0
    duplicates_dropped: int = 0
    rows_quarantined: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    extra_columns: list[str] = field(default_factory=list)

    @property
    def quarantine_rate(self) -> float:
        return self.rows_quarantined / self.rows_read if self.rows_read else 0.0


def kind_counts(tally: dict[str, int], reasons: tuple[str, ...], checks: list[FileCheck]) -> KindCounts:
    """Row accounting of one kind from the observed row tally (``written``, ``duplicates``,
    ``quarantined`` and ``reason_<i>`` per entry of ``reasons``) and the whole-file checks."""
    if "written" not in tally:
        raise RuntimeError("Spark returned no row tally for the ingest's write (observed metrics missing)")
    by_reason: Counter[str] = Counter(
        {reason: tally[f"reason_{i}"] for i, reason in enumerate(reasons) if tally[f"reason_{i}"]}
    )
    if sum(by_reason.values()) != tally["quarantined"]:
        raise RuntimeError(
            f"{tally['quarantined']} rows were quarantined but only {sum(by_reason.values())} under the known "
            f"reasons {reasons}: a rule's reason is missing from row_reasons"
        )
    for check in checks:
        if not check.ok:
            by_reason[check.reason.split(":")[0]] += check.lines  # type: ignore[union-attr]
    counts = KindCounts(
        files=len(checks),
        files_quarantined=sum(not c.ok for c in checks),
        rows_written=tally["written"],
        duplicates_dropped=tally["duplicates"],
        rows_quarantined=sum(by_reason.values()),
        quarantined_by_reason=dict(sorted(by_reason.items())),
        extra_columns=sorted({name for c in checks for name in c.extra_columns}),
    )
    counts.rows_read = counts.rows_written + counts.duplicates_dropped + counts.rows_quarantined
    return counts


# ---------------------------------------------------------------------------------------------------------
# Pure DataFrame functions.


def _blank(column: Column) -> Column:
    return column.isNull() | (F.trim(column) == "")


def _too_long(columns: tuple[str, ...]) -> Column:
    """Any field longer than the contract allows (a runaway quote or a binary blob, not an id or a name)."""
    return F.greatest(*[F.coalesce(F.length(c), F.lit(0)) for c in columns]) > MAX_FIELD_CHARS


def _first_reason(rules: list[tuple[Column, str]]) -> Column:
    """The reason of the first rule that fires, else null (the row is valid)."""
    expr = F.lit(None).cast("string")
    for condition, reason in reversed(rules):
        expr = F.when(condition, F.lit(reason)).otherwise(expr)
    return expr


Day = dt.date | Column  # the drop's day, or (a multi-day job) each row's ``for_ds``


def _midnight(ds: Day, days: int = 0) -> Column:
    """Midnight UTC starting ``ds + days``."""
    if isinstance(ds, dt.date):
        return F.lit(dt.datetime.combine(ds + dt.timedelta(days=days), dt.time()).isoformat() + "Z").cast("timestamp")
    return F.concat(F.date_add(ds, days).cast("string"), F.lit("T00:00:00Z")).cast("timestamp")


def _timestamp_rules(column: str, ds: Day, what: str) -> tuple[list[tuple[Column, str]], Column]:
    raw = F.trim(F.col(column))
    parsed = F.try_to_timestamp(F.regexp_replace(raw, " ", "T"))
    start, end = _midnight(ds), _midnight(ds, 1)
    rules = [
        (_blank(F.col(column)), f"missing_{column}"),
        (raw.rlike(ISO_WITHOUT_ZONE), f"{column}_without_timezone"),
        (~raw.rlike(ISO_WITH_ZONE) | parsed.isNull(), f"bad_{column}"),
        (parsed >= end, f"{column}_after_{what}"),
        (parsed < start, f"{column}_before_{what}"),
    ]
    return rules, parsed


def _rate_map(rates: Mapping[str, float]) -> Column | None:
    rated = sorted(rates.items())
    return F.create_map(*[x for code, rate in rated for x in (F.lit(code), F.lit(rate))]) if rated else None


def _eur_rate(ds: Day, currency: Column, rates: Mapping[str, float] | Mapping[dt.date, Mapping[str, float]]) -> Column:
    """The EUR rate of ``currency``: from one day's rates, or (``ds`` a column) from each row's day's."""
    if isinstance(ds, dt.date):
        fx = _rate_map(rates)  # type: ignore[arg-type]
        return fx[currency] if fx is not None else F.lit(None).cast("double")
    per_day = [(str(day), _rate_map(day_rates)) for day, day_rates in sorted(rates.items())]  # type: ignore[union-attr]
    per_day = [(day, fx) for day, fx in per_day if fx is not None]
    if not per_day:
        return F.lit(None).cast("double")
    fx = F.create_map(*[x for day, day_fx in per_day for x in (F.lit(day), day_fx)])
    return fx[ds.cast("string")][currency]


def _transaction_checks(
    ds: Day,
    reference: ReferenceConfig | None = None,
    rates: Mapping[str, float] | Mapping[dt.date, Mapping[str, float]] | None = None,
) -> tuple[dict[str, Column], list[tuple[Column, str]]]:
    """The typed columns of a transaction row and the contract's rules, in the order they are checked.

    ``reference`` (default: the configuration's) gives the accepted currencies, channels, countries and the
    amount limit; ``rates`` the day's EUR rates (:func:`loopline.reference.rates_for_day`; default: the
    static ones), or with ``ds`` a column the rates of each day. An accepted currency without a rate is
    ``no_fx_rate``, an unknown one ``unknown_currency``.
    """
    reference = reference or get_config().reference
    if rates is None:
        rates = static_rates(reference)
    time_rules, event_time = _timestamp_rules("event_time", ds, "drop_day")
    amount_text = F.trim(F.col("amount"))
    amount = F.when(amount_text.rlike(DECIMAL), amount_text.try_cast("double"))
    currency = F.upper(F.trim(F.col("currency")))
    amount_eur = F.round(amount * _eur_rate(ds, currency, rates), 2)
    country = F.trim(F.col("country"))
    country_rules = (
        [(~country.isin(*reference.countries), "unknown_country")] if reference.countries is not None else []
    )
    card_present = F.lower(F.trim(F.col("card_present")))
    rules = [
        (F.col(CORRUPT).isNotNull(), "malformed_row"),
        (_too_long(TRANSACTION_COLUMNS), "field_too_long"),
        (F.concat_ws("", *[F.col(c) for c in TRANSACTION_COLUMNS]).contains("\ufffd"), "encoding_error"),
        *[(_blank(F.col(c)), f"missing_{c}") for c in ("transaction_id", "customer_id", "merchant_id")],
        *time_rules,
        (_blank(F.col("amount")), "missing_amount"),
        (amount.isNull(), "bad_amount"),
        (amount <= 0, "non_positive_amount"),
        (~currency.isin(*reference.currencies), "unknown_currency"),
        (amount_eur.isNull(), "no_fx_rate"),
        (amount_eur > reference.max_amount_eur, "amount_too_large"),
        (_blank(F.col("merchant_category")), "missing_merchant_category"),
        (~F.lower(F.trim(F.col("channel"))).isin(*reference.channels), "unknown_channel"),
        (~country.rlike("^[A-Z]{2}$"), "bad_country"),
        *country_rules,
        (~card_present.isin(*CARD_PRESENT_VALUES), "bad_card_present"),
    ]
    typed = {
        "event_time": event_time,
        "amount": amount,
        "currency": currency,
        "amount_eur": amount_eur,
        "card_present": card_present == "true",
    }
    return typed, rules


def _day_column(ds: Day) -> list[Column]:
    return [] if isinstance(ds, dt.date) else [ds.alias(FOR_DS)]


def validate_transactions(
    df: DataFrame,
    ds: Day,
    reference: ReferenceConfig | None = None,
    rates: Mapping[str, float] | Mapping[dt.date, Mapping[str, float]] | None = None,
) -> DataFrame:
    """Type and check every row; ``reason`` is null for valid rows, else the first broken rule.

    Input: the contract's columns as strings plus ``_corrupt_record`` and ``source_file`` (and, ``ds`` a
    column, the row's day, kept as ``for_ds``). ``reference`` and ``rates``: as in :func:`_transaction_checks`.
    """
    typed, rules = _transaction_checks(ds, reference, rates)
    return df.select(
        *_day_column(ds),
        F.trim("transaction_id").alias("transaction_id"),
        typed["event_time"].alias("event_time"),
        F.trim("customer_id").alias("customer_id"),
        F.trim("merchant_id").alias("merchant_id"),
        F.lower(F.trim("merchant_category")).alias("merchant_category"),
        typed["amount"].alias("amount"),
        typed["currency"].alias("currency"),
        typed["amount_eur"].alias("amount_eur"),
        F.lower(F.trim("channel")).alias("channel"),
        F.trim("country").alias("country"),
        typed["card_present"].alias("card_present"),
        "source_file",
        _first_reason(rules).alias("reason"),
        _raw_record(df, TRANSACTION_COLUMNS).alias("raw_record"),
    )


def _label_checks(ds: Day) -> tuple[dict[str, Column], list[tuple[Column, str]]]:
    """The typed columns of a label row and the contract's rules (``reported_at`` on the drop's day)."""
    time_rules, reported_at = _timestamp_rules("reported_at", ds, "drop_day")
    is_fraud = F.trim(F.col("is_fraud"))
    rules = [
        (F.col(CORRUPT).isNotNull(), "malformed_row"),
        (_too_long(LABEL_COLUMNS), "field_too_long"),
        (_blank(F.col("transaction_id")), "missing_transaction_id"),
        (~is_fraud.isin("0", "1") | is_fraud.isNull(), "bad_is_fraud"),
        *time_rules,
    ]
    return {"is_fraud": is_fraud.try_cast("int"), "reported_at": reported_at}, rules


def validate_labels(df: DataFrame, ds: Day) -> DataFrame:
    """Type and check label rows (``reported_at`` must fall on the drop's day; ``ds`` a column: as in
    :func:`validate_transactions`)."""
    typed, rules = _label_checks(ds)
    return df.select(
        *_day_column(ds),
        F.trim("transaction_id").alias("transaction_id"),
        typed["is_fraud"].alias("is_fraud"),
        typed["reported_at"].alias("reported_at"),
        "source_file",
        _first_reason(rules).alias("reason"),
        _raw_record(df, LABEL_COLUMNS).alias("raw_record"),
    )


def row_reasons(kind: str) -> tuple[str, ...]:
    """Every reason a row of ``kind`` can be quarantined for, in the order the rules are checked."""
    checks = _transaction_checks if kind == "transactions" else _label_checks
    _, rules = checks(dt.date(2000, 1, 1))  # the day only moves the bounds, never the reasons
    return (*dict.fromkeys(reason for _, reason in rules), CONFLICTING_ID)


def _raw_record(df: DataFrame, columns: tuple[str, ...]) -> Column:
    """The row as it arrived: the corrupt line itself, or the fields as JSON."""
    return F.coalesce(F.col(CORRUPT), F.to_json(F.struct(*[F.col(c) for c in columns])))


def resolve_duplicates(checked: DataFrame, key: str, content: list[str], by: tuple[str, ...] = ()) -> DataFrame:
    """Drop exact duplicates (same content, any file); quarantine ids that arrive with conflicting content.

    Adds ``is_duplicate`` (an exact copy that is dropped, not lost: its twin is kept). ``by``: keys the rows are
    also split by (``for_ds``: each day's drop on its own).
    """
    valid = F.col("reason").isNull()
    by_content = Window.partitionBy(*by, *content).orderBy("source_file", "raw_record")
    by_key = Window.partitionBy(*by, key)
    marked = checked.withColumn("is_duplicate", valid & (F.row_number().over(by_content) > 1)).withColumn(
        # distinct contents among the valid rows of this id: more than one means the id conflicts
        "_variants",
        F.size(F.collect_set(F.when(valid, F.to_json(F.struct(*content)))).over(by_key)),
    )
    return marked.withColumn(
        "reason",
        F.when(valid & (F.col("_variants") > 1), F.lit(CONFLICTING_ID)).otherwise(F.col("reason")),
    ).drop("_variants")


def customer_daily(transactions: DataFrame, by: tuple[str, ...] = ()) -> DataFrame:
    """Per customer, merchant and country: the day's count, amount sum and sum of squares in whole cents
    (exact integers, so the feature job's rolling windows add and subtract them without drift), last time.
    ``by``: keys the rows are also split by (``for_ds``)."""
    cents = F.round(F.col("amount_eur") * 100).cast("long")
    return transactions.groupBy(*by, "customer_id", "merchant_id", "country").agg(
        F.count("*").alias("cnt"),
        F.sum(cents).alias("amount_cents"),
        F.sum(cents * cents).alias("amount_cents_sq"),
        F.max("event_time").alias("last_event_time"),
    )


def label_transactions(labels: DataFrame, transactions: DataFrame, lookback_days: int | None = None) -> DataFrame:
    """Attach each label to its transaction (customer, merchant, category, event time).

    With ``lookback_days`` (several days at once): labels and transactions carry their day (``for_ds``), and a
    label matches the transactions of its own day and of the ``lookback_days`` days before it.
    """
    columns = ["transaction_id", "customer_id", "merchant_id", "merchant_category", "event_time"]
    if lookback_days is None:
        joined = labels.join(transactions.select(*columns), "transaction_id", "inner")
        day = []
    else:
        candidates = transactions.select(*columns, F.col(FOR_DS).alias("_tx_ds"))
        joined = labels.join(candidates, "transaction_id", "inner").where(
            F.datediff(F.col(FOR_DS), F.col("_tx_ds")).between(0, lookback_days)
        )
        day = [FOR_DS]
    return joined.select(
        *day,
        "transaction_id",
        "customer_id",
        "merchant_id",
        "merchant_category",
        "event_time",
        "is_fraud",
        "reported_at",
    )


def merchant_label_daily(labeled: DataFrame, by: tuple[str, ...] = ()) -> DataFrame:
    """Per merchant: labels reported that day and how many were fraud (the input of risk features)."""
    return labeled.groupBy(*by, "merchant_id", "merchant_category").agg(
        F.count("*").alias("n_labels"), F.sum("is_fraud").alias("n_fraud")
    )


# ---------------------------------------------------------------------------------------------------------
# I/O around the pure functions.


_GLOB = re.compile(r"([\\*?\[\]{}])")


def spark_path(path: str) -> str:
    """``path`` with Hadoop's glob characters escaped: Spark globs every path it reads, so ``part[1].csv``
    would silently read ``part1.csv`` instead, and ``a*.csv`` every file it matches."""
    return _GLOB.sub(r"\\\1", path)


def _read_files(
    spark: SparkSession,
    landing: Landing,
    checks: list[FileCheck],
    columns: tuple[str, ...],
    staged: dict[str, str] | None = None,
):
    """Read readable files as strings (schema = each file's own header) and align them on the contract.

    ``staged`` maps a landing URI to its staged copy, which Spark reads instead; ``source_file`` stays the URI.
    """
    staged = staged or {}
    frames = []
    for check in checks:
        schema = T.StructType(
            [T.StructField(name, T.StringType()) for name in check.header] + [T.StructField(CORRUPT, T.StringType())]
        )
        frame = (
            spark.read.schema(schema)
            .options(
                header=True,
                multiLine=True,
                mode="PERMISSIVE",
                columnNameOfCorruptRecord=CORRUPT,
                escape='"',
                encoding="UTF-8",
                enforceSchema=True,
            )
            .csv(spark_path(staged.get(check.uri) or landing.spark_uri(check.uri)))
            .select(*[F.col(c) for c in columns], F.col(CORRUPT), F.lit(check.uri).alias("source_file"))
        )
        frames.append(frame)
    if not frames:
        schema = T.StructType([T.StructField(c, T.StringType()) for c in (*columns, CORRUPT, "source_file")])
        return spark.createDataFrame([], schema)
    result = frames[0]
    for frame in frames[1:]:
        result = result.unionByName(frame)
    return result


def _file_quarantine(spark: SparkSession, checks: dict[dt.date, list[FileCheck]]) -> DataFrame | None:
    rows = [
        (day, c.uri, c.reason, json.dumps({"lines": c.lines, "bytes": c.size}))
        for day, day_checks in checks.items()
        for c in day_checks
        if not c.ok
    ]
    if not rows:
        return None
    return spark.createDataFrame(rows, f"{FOR_DS} date, source_file string, reason string, raw_record string")


def _check_kind(
    landing: Landing,
    kind: str,
    ds: dt.date,
    columns: tuple[str, ...],
    stage_root: str | None,
    limits: ScanLimits | None = None,
) -> tuple[list[FileCheck], dict[str, str]]:
    """The whole-file checks of a kind's data files and, with ``stage_root``, their staged copies (URI -> path).

    Everything read from the landing before Spark runs happens here, so an unreachable object store fails the
    day before anything is written.
    """
    files = landing.data_files(kind, str(ds))
    staged: dict[str, str] = {}
    if stage_root:
        try:
            staged = landing.stage(stage_root, kind, str(ds), files)
        except DropChanged as exc:
            raise DropIncomplete(
                f"landing drop for ds={ds} changed after its _SUCCESS marker: {exc}. Once it is complete, write "
                "the marker again and rerun the day."
            ) from exc
    checks = [check_file(landing, uri, size, columns, staged.get(uri), limits) for uri, size in files]
    return checks, staged


def check_drop(landing: Landing, ds: dt.date) -> None:
    """Raise :class:`DropIncomplete` when the day's drop lacks a ``_SUCCESS`` marker or changed after it."""
    missing = [k for k in ("transactions", "labels") if not landing.is_complete(k, str(ds))]
    if missing:
        paths = ", ".join(landing.marker_uri(k, str(ds)) for k in missing)
        raise DropIncomplete(f"landing drop for ds={ds} is not complete: missing {paths}")
    late = [uri for kind in ("transactions", "labels") for uri in landing.written_after_marker(kind, str(ds))]
    if late:
        listed = ", ".join(late[:5]) + (" ..." if len(late) > 5 else "")
        raise DropIncomplete(
            f"landing drop for ds={ds} changed after its _SUCCESS marker: {listed}. The producer must write "
            "_SUCCESS last; the files may still be arriving. Once they are complete, write the marker again "
            "and rerun the day."
        )


def run(spark: SparkSession, ds: dt.date, cfg: LooplineConfig | None = None) -> dict:
    """Ingest ``ds``; returns counts per kind and the uncommitted versions of the raw layer. The day's
    quarantine is committed (:func:`commit_quarantine`)."""
    cfg = cfg or get_config()
    result = run_days(spark, [ds], cfg)[ds]
    commit_quarantine(ds, result, cfg)
    return result


def commit_quarantine(ds: dt.date, result: dict, cfg: LooplineConfig | None = None) -> None:
    """Commit the quarantine partitions an ingest wrote for ``ds`` (``result``: its result for the day, whose
    ``version`` every table of the day shares), before the day's gates: they are the evidence an operator
    triages a failed gate with."""
    cfg = cfg or get_config()
    lake = Lake(resolve_uri(cfg.storage.lake_uri))
    for kind, table in (("transactions", tables.QUARANTINE_TRANSACTIONS), ("labels", tables.QUARANTINE_LABELS)):
        lake.commit(table, ds, result["version"], stats={"rows": result[kind]["rows_quarantined"]})


def run_days(spark: SparkSession, days: list[dt.date], cfg: LooplineConfig | None = None) -> dict[dt.date, dict]:
    """Ingest consecutive ``days`` in one Spark pass (one day: the daily run; several: a range backfill's
    chunk); returns :func:`run`'s result per day, nothing committed (quarantine included). Each day's drop is
    checked on its own and its rows are validated, de-duplicated, quarantined and aggregated against its own
    day only, so a day ingested with others is the day ingested alone. A day's raw labels match the
    transactions of its day and the ``LABEL_LOOKBACK_DAYS`` before it: the committed ones before the first
    day, this pass's after it."""
    cfg = cfg or get_config()
    landing = Landing(resolve_uri(cfg.storage.landing_uri), cfg.storage.aws_conn_id)
    lake = Lake(resolve_uri(cfg.storage.lake_uri))
    if days != tables.day_range(days[0], days[-1]):
        raise ValueError(f"run_days needs consecutive days, got {[str(d) for d in days]}")
    for day in days:
        check_drop(landing, day)
    versions = {day: tables.new_version() for day in days}
    # An object-store drop is copied to a shared folder first when Spark cannot read the object store: a folder
    # of this run's own (a retry never shares it with a try still running), removed once the days are written.
    stage_roots: list[str] = []
    try:
        checked: dict[dt.date, dict[str, tuple[list[FileCheck], dict[str, str]]]] = {}
        rates: dict[dt.date, DayRates] = {}
        for day in days:
            stage_root = None
            if landing.is_s3 and cfg.storage.stage_uri:
                stage_root = f"{resolve_uri(cfg.storage.stage_uri).rstrip('/')}/run={versions[day]}"
                stage_roots.append(stage_root)
            limits = ScanLimits.from_config(cfg.validation)
            checked[day] = {
                kind: _check_kind(landing, kind, day, columns, stage_root, limits)
                for kind, columns in (("transactions", TRANSACTION_COLUMNS), ("labels", LABEL_COLUMNS))
            }
            rates[day] = rates_for_day(cfg.reference, day, landing)
            log.info("ds=%s fx rates: %s", day, rates[day].describe())
        return _ingest_days(spark, days, lake, landing, checked, versions, cfg.reference, rates)
    finally:
        for stage_root in stage_roots:
            shutil.rmtree(stage_root, ignore_errors=True)


def _read_kind(
    spark: SparkSession,
    landing: Landing,
    kind: str,
    columns: tuple[str, ...],
    checked: dict[dt.date, dict[str, tuple[list[FileCheck], dict[str, str]]]],
) -> DataFrame:
    """Every readable file of a kind over the days, each row with its day (``for_ds``)."""
    frames = []
    for day, kinds in checked.items():
        checks, staged = kinds[kind]
        raw = _read_files(spark, landing, [c for c in checks if c.ok], columns, staged)
        frames.append(raw.withColumn(FOR_DS, F.lit(day)))
    result = frames[0]
    for frame in frames[1:]:
        result = result.unionByName(frame)
    return result


def _tally_conditions(kept: Column, duplicate: Column, reasons: tuple[str, ...]) -> list[tuple[Column, str]]:
    """What the ingest counts per day: rows written, duplicates dropped, rows quarantined, and per reason."""
    return [
        (kept & ~duplicate, "written"),
        (kept & duplicate, "duplicates"),
        (~kept, "quarantined"),
        *[(F.col("reason") == reason, f"reason_{i}") for i, reason in enumerate(reasons)],
    ]


def _ingest_days(
    spark: SparkSession,
    days: list[dt.date],
    lake: Lake,
    landing: Landing,
    checked: dict[dt.date, dict[str, tuple[list[FileCheck], dict[str, str]]]],
    versions: dict[dt.date, str],
    reference: ReferenceConfig,
    rates: dict[dt.date, DayRates],
) -> dict[dt.date, dict]:
    """Write the checked files of both kinds and the derived daily tables as each day's uncommitted version."""
    results: dict[dt.date, dict] = {}
    for day in days:
        results[day] = {"ds": str(day), "version": versions[day], "tables": {}}
        results[day]["fx"] = {
            "rate_days": rates[day].rate_days,
            "missing": list(rates[day].missing),
            "summary": rates[day].describe(),
        }
    by = (FOR_DS,)
    for kind, columns, table, quarantine_table in (
        ("transactions", TRANSACTION_COLUMNS, tables.RAW_TRANSACTIONS, tables.QUARANTINE_TRANSACTIONS),
        ("labels", LABEL_COLUMNS, tables.RAW_LABELS, tables.QUARANTINE_LABELS),
    ):
        raw = _read_kind(spark, landing, kind, columns, checked)
        row_day = F.col(FOR_DS)
        if kind == "transactions":
            validated = validate_transactions(raw, row_day, reference, {d: r.rates for d, r in rates.items()})
        else:
            validated = validate_labels(raw, row_day)
        resolved = resolve_duplicates(validated, "transaction_id", list(CONTENT_COLUMNS[kind]), by).cache()
        reasons = row_reasons(kind)
        kept, duplicate = F.col("reason").isNull(), F.col("is_duplicate")
        conditions = _tally_conditions(kept, duplicate, reasons)
        # The tally rides along with the first write (an observation, not a query of its own), per day.
        tally = Observation(f"ingest_{kind}_{versions[days[0]]}")
        observed = resolved.observe(
            tally,
            *[
                F.count_if((F.col(FOR_DS) == F.lit(day)) & condition).alias(f"d{i}_{name}")
                for i, day in enumerate(days)
                for condition, name in conditions
            ],
        )
        output = observed.where(kept & ~duplicate).drop("reason", "raw_record", "is_duplicate")
        if kind == "labels":
            output = output.select(FOR_DS, "transaction_id", "is_fraud", "reported_at", "source_file")
        bad = resolved.where(~kept).select(FOR_DS, "source_file", "reason", "raw_record")
        file_quarantine = _file_quarantine(spark, {d: checked[d][kind][0] for d in days})
        if file_quarantine is not None:
            bad = bad.unionByName(file_quarantine)

        write_days(output, lake, table, days, versions)  # computes the days, fills the cache and the tally
        write_days(bad, lake, quarantine_table, days, versions)
        observed_tally = tally.get
        if "d0_written" in observed_tally:
            tallies = {
                day: {name: observed_tally[f"d{i}_{name}"] for _, name in conditions} for i, day in enumerate(days)
            }
        else:
            # A Spark Connect server without SPARK-54279 waits only 100 ms for a write's observed metrics and
            # sends an empty row when they come later (a loaded machine): count from the cached rows instead.
            log.warning("%s: the write's row tally came back empty; counting the cached rows", kind)
            rows = resolved.groupBy(FOR_DS).agg(*[F.count_if(c).alias(name) for c, name in conditions]).collect()
            tallies = {row[FOR_DS]: row.asDict() for row in rows}
        resolved.unpersist()
        none = {"written": 0, "duplicates": 0, "quarantined": 0} | {f"reason_{i}": 0 for i in range(len(reasons))}
        for day in days:
            counts = kind_counts(tallies.get(day, none), reasons, checked[day][kind][0])
            results[day][kind] = counts.__dict__ | {"quarantine_rate": round(counts.quarantine_rate, 6)}
            results[day]["tables"][table] = versions[day]

    # Derived daily tables, from the versions just written (not yet committed).
    def written(table: str) -> DataFrame:
        return read_days(spark, lake, table, versions).withColumnRenamed("ds", FOR_DS)  # type: ignore[union-attr]

    transactions = written(tables.RAW_TRANSACTIONS)
    write_days(customer_daily(transactions, by), lake, tables.CUSTOMER_DAILY, days, versions)

    # Labels match the transactions of the lookback days: the committed ones before this pass, then its own.
    lookback = tables.day_range(days[0] - dt.timedelta(days=LABEL_LOOKBACK_DAYS), days[0] - dt.timedelta(days=1))
    candidates = transactions
    earlier = {day: lake.current_version(tables.RAW_TRANSACTIONS, day) for day in lookback}
    history = read_days(spark, lake, tables.RAW_TRANSACTIONS, earlier)
    if history is not None:
        candidates = candidates.unionByName(history.withColumnRenamed("ds", FOR_DS))
    labeled = label_transactions(written(tables.RAW_LABELS), candidates, LABEL_LOOKBACK_DAYS)
    write_days(labeled, lake, tables.LABELED_TRANSACTIONS, days, versions)
    write_days(
        merchant_label_daily(written(tables.LABELED_TRANSACTIONS), by),
        lake,
        tables.MERCHANT_LABEL_DAILY,
        days,
        versions,
    )
    for day in days:
        uri = lake.version_uri(tables.LABELED_TRANSACTIONS, day, versions[day])
        labels_matched = lake.arrow_dataset(uri).count_rows()
        result = results[day]
        result["labels"]["labels_matched"] = labels_matched
        # Labels whose transaction is not in the lake (older than the lake, or unknown) stay in raw labels.
        result["labels"]["labels_unmatched"] = result["labels"]["rows_written"] - labels_matched
        for table in (tables.CUSTOMER_DAILY, tables.LABELED_TRANSACTIONS, tables.MERCHANT_LABEL_DAILY):
            result["tables"][table] = versions[day]
    return results


def publish(ds: dt.date, versions: dict[str, str], stats: dict | None = None, cfg: LooplineConfig | None = None):
    """Commit the raw layer written by :func:`run` (after its gate passed): one pointer flip per table."""
    cfg = cfg or get_config()
    lake = Lake(resolve_uri(cfg.storage.lake_uri))
    for table in RAW_LAYER:
        lake.commit(table, ds, versions[table], stats=stats)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    spark = session(args.remote)
    result = run(spark, args.ds)
    publish(args.ds, result["tables"])
    print_result(result)


if __name__ == "__main__":
    main()

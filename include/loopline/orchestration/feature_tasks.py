"""Tasks of the ``feature_pipeline`` DAG: thin Airflow wrappers over ``spark_jobs`` and ``loopline``.

Each Spark task gets a ready session from the apache-spark provider (``@task.pyspark``): a Spark Connect
client when the ``loopline_spark`` connection is of type ``spark_connect`` (the default), a driver against
a cluster master when it is of type ``spark``. The same job functions run either way.

Data problems (incomplete drop, failed gate, holes in history) fail the task without retries and with the
message an operator needs; infrastructure errors keep the DAG's retries.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from loopline import lineage
from loopline.config import LooplineConfig, get_config, resolve_uri
from loopline.orchestration import links, reports
from loopline.orchestration.database import open_predictions_db
from loopline.orchestration.lineage import namespace, report_lineage
from loopline.orchestration.spark_access import SPARK_TASK

if TYPE_CHECKING:
    from loopline.validation import GateResult

# Name-only on purpose: a URI with a scheme makes Airflow load every provider's URI handlers (amazon's S3
# hook among them), a cost paid on every parse of every DAG that declares the Asset.
# Its name is the features' lineage dataset name (each day's partition: ``loopline_features/ds=<ds>``).
FEATURES_ASSET = Asset(name=lineage.FEATURES_ASSET, group="loopline")


def _reports_dir(space: reports.ReportSpace, kind: str) -> Path:
    """Where ``kind`` reports are rendered: under ``storage.reports_uri``, or its scratch stand-in (object storage)."""
    return space.root / kind


def _gate(frame: Any, suite: str, *, ds: str, params: dict[str, Any]) -> GateResult:
    """:func:`loopline.validation.check_gate` with its Data Docs kept under ``storage.reports_uri``.

    Rendered locally; with object storage the day's site is uploaded, a failing gate's too (its report is
    what the operator opens first), and ``report_uri`` names the object. Raises ``GateFailed`` as the gate does.
    """
    from loopline.validation import GateFailed, check_gate, report_folder

    with reports.report_space() as space:
        report_dir = _reports_dir(space, "gx")
        try:
            result = check_gate(frame, suite, ds=ds, params=params, report_dir=report_dir)
        except GateFailed as exc:
            if not space.remote:
                raise
            space.publish(report_folder(report_dir, suite, ds))
            raise GateFailed(replace(exc.result, report_uri=space.stored_uri(exc.result.report_uri))) from None
        space.publish(report_folder(report_dir, suite, ds))
        return replace(result, report_uri=space.stored_uri(result.report_uri))


def _gate_frame(spark: Any, uri: str):
    """The data a gate validates: a Spark DataFrame, or (engine ``pandas``) the version read with Arrow
    straight from the lake (a Spark query costs more than reading a day of Parquet)."""
    cfg = get_config()
    if cfg.validation.engine == "pandas":
        from loopline.lake import Lake

        return Lake(resolve_uri(cfg.storage.lake_uri)).arrow_dataset(uri).to_table().to_pandas()
    return spark.read.parquet(uri)


def _fail_on_data_errors(call, *args, **kwargs):
    """Run ``call``; data errors become AirflowFailException (no retry), everything else propagates."""
    from loopline.validation import GateFailed
    from spark_jobs.features import HistoryIncomplete
    from spark_jobs.ingest import DropIncomplete

    try:
        result = call(*args, **kwargs)
    except (GateFailed, DropIncomplete, HistoryIncomplete) as exc:
        if isinstance(exc, GateFailed):  # the report is what the operator opens first
            links.record(links.REPORT_KEY, links.report_url(exc.result.report_uri))
        raise AirflowFailException(str(exc)) from exc
    if hasattr(result, "report_uri"):
        links.record(links.REPORT_KEY, links.report_url(result.report_uri))
    return result


def check_day_free(day: dt.date, waited: float, cfg: LooplineConfig | None = None) -> bool:
    """One check of ``wait_for_range_backfill``: True when no live range backfill holds ``day``
    (:func:`loopline.backfill.day_held`); else logs which range does and returns False, or fails naming it once
    ``waited`` (seconds since the first check) reached ``backfill.daily_wait_seconds``."""
    import logging

    import psycopg2

    from loopline.backfill import day_held

    log = logging.getLogger(__name__)
    cfg = cfg or get_config()
    limit = cfg.backfill.daily_wait_seconds
    try:
        conn = open_predictions_db(cfg)
        try:
            reason = day_held(conn, cfg.postgres.schema_, day)
        finally:
            conn.close()
    except psycopg2.Error as exc:
        # A range holds its days through its own session of this database: the lake's daily publish does not
        # hang on a database outage (as record_ingest, which reports it), only on a range that is alive.
        log.warning("ds=%s: cannot check for a range backfill holding the day (%s); going on", day, exc)
        return True
    if reason is None:
        return True
    log.info("waiting (%.0f of backfill.daily_wait_seconds=%d s): %s", waited, limit, reason)
    if waited >= limit:
        raise AirflowFailException(
            f"{reason}; still held after backfill.daily_wait_seconds ({limit}s). The range writes this day itself: "
            f"follow it in {cfg.postgres.schema_}.backfill_runs or its task log. Once it has finished (or failed), "
            "clear this task with its downstream tasks to run the day; if ranges routinely outlast the wait, raise "
            "backfill.daily_wait_seconds."
        )
    return False


# Reschedule: no slot held while a range runs. The DAG's retries cover a lost worker; a timed-out wait never retries
# (ours fails with AirflowFailException, Airflow's with AirflowSensorTimeout).
@task.sensor(task_id="wait_for_range_backfill", mode="reschedule")
def wait_for_range_backfill() -> bool:
    """Wait while a running ``backfill_range`` holds ``ds`` (its advisory lock of the day), so a daily run does not
    write a day a live range is writing; without a range on the day the first check passes. (A range that
    starts after this check is not seen: the check and the ingest are two steps.)"""
    from loopline.orchestration.sensors import waited_seconds

    context = get_current_context()
    return check_day_free(dt.date.fromisoformat(context["ds"]), waited_seconds(context))


def range_lockout(cfg: LooplineConfig):
    """``wait_for_range_backfill`` with its timeout (``backfill.daily_wait_seconds``) and poke interval."""
    # Airflow's own timeout is a poke later than ours: the failure is ours, naming the range.
    poke = cfg.validation.sensor_poke_seconds
    return wait_for_range_backfill.override(poke_interval=poke, timeout=cfg.backfill.daily_wait_seconds + poke)()


# wait_for_downstream (implies depends_on_past): day D's ingest matches labels to earlier days' published
# transactions and its features roll their aggregates, so it starts only once D-1's ingest and publish_raw
# (gate and commit) succeeded. Runs of a backfill still overlap in their later steps.
@task.pyspark(**SPARK_TASK, wait_for_downstream=True)
def ingest_drop(ds: str | None = None, spark: Any = None, params: dict | None = None) -> dict:
    """Spark ingest of the day's drop into new, uncommitted raw versions; returns the row accounting.

    With the trigger form's ``force_reingest`` off and the day's raw layer already published, skips (and
    ``publish_raw`` with it): the features are rebuilt from the published raw partition.
    """
    import logging

    from loopline.orchestration.forms import param
    from spark_jobs import ingest

    if not param(params, "force_reingest", True):
        published = _published_raw(dt.date.fromisoformat(ds))
        if published:
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException(
                f"force_reingest is off and ds={ds} is already ingested ({published}): reusing the published raw "
                "partition, rebuilding only the features"
            )
    result = _fail_on_data_errors(ingest.run, spark, dt.date.fromisoformat(ds))
    log = logging.getLogger(__name__)
    for kind in ("transactions", "labels"):
        counts = result[kind]
        log.info(
            "%s ds=%s: read %d, written %d, duplicates dropped %d, quarantined %d %s; files %d (%d quarantined)%s",
            kind,
            ds,
            counts["rows_read"],
            counts["rows_written"],
            counts["duplicates_dropped"],
            counts["rows_quarantined"],
            counts["quarantined_by_reason"] or "",
            counts["files"],
            counts["files_quarantined"],
            f"; extra columns ignored: {counts['extra_columns']}" if counts["extra_columns"] else "",
        )
    report_ingest_lineage(ds, result)
    return result


def report_ingest_lineage(ds: str, ingested: dict) -> None:
    """``ingest_drop``'s lineage: the day's landing drop -> the raw layer versions it wrote."""
    ns = namespace()
    report_lineage(
        [lineage.landing(ns, kind, ds) for kind in ("transactions", "labels")],
        [lineage.lake(ns, table, ds, version) for table, version in sorted(ingested["tables"].items())],
        step="ingest_drop",
    )


def report_build_lineage(ds: str, built: dict) -> None:
    """``build_features``' lineage: the day's raw layer -> the features version it wrote."""
    from loopline import lake as tables

    ns = namespace()
    report_lineage(
        [lineage.lake(ns, t, ds) for t in (tables.RAW_TRANSACTIONS, tables.RAW_LABELS, tables.LABELED_TRANSACTIONS)],
        [lineage.lake(ns, tables.FEATURES, ds, built["version"])],
        step="build_features",
    )


def _published_raw(day: dt.date) -> str | None:
    """The published version of the day's raw layer (transactions and labels both committed), else None."""
    from loopline import lake as tables
    from loopline.lake import Lake

    lake = Lake(resolve_uri(get_config().storage.lake_uri))
    versions = [lake.current_version(table, day) for table in (tables.RAW_TRANSACTIONS, tables.RAW_LABELS)]
    return None if None in versions else f"raw/transactions version {versions[0]}"


# Write-audit-publish: the gate and the commit are one task, so a passed gate and its publish cannot be
# separated (and a backfilled day pays for one task process, not two).
@task.pyspark(**SPARK_TASK)
def publish_raw(ingested: dict, ds: str | None = None, spark: Any = None) -> dict:
    """GX gate on the uncommitted raw versions and on the ingest's quarantine rate; when every suite
    passes, commit the raw layer (one atomic pointer flip per table). A failed gate commits nothing."""
    return gate_and_publish_raw(spark, ds, ingested)


def gate_and_publish_raw(spark: Any, ds: str, ingested: dict) -> dict:
    """``publish_raw``'s work, shared with the range backfill: the day's raw gates, then the commit."""
    import pandas as pd

    from loopline import lake as tables
    from loopline.lake import Lake
    from loopline.validation import row_count_bounds
    from spark_jobs import ingest

    cfg = get_config()
    day = dt.date.fromisoformat(ds)
    lake = Lake(resolve_uri(cfg.storage.lake_uri))
    version = ingested["version"]
    recent = tables.day_range(
        day - dt.timedelta(days=cfg.validation.row_count_lookback_days), day - dt.timedelta(days=1)
    )
    recent_counts = [lake.stats(tables.RAW_TRANSACTIONS, d).get("rows") for d in recent]
    low, high = row_count_bounds(
        [c for c in recent_counts if c is not None],
        min_ratio=cfg.validation.row_count_min_ratio,
        max_ratio=cfg.validation.row_count_max_ratio,
        min_rows=cfg.validation.min_rows,
    )
    results = {}
    tx = ingested["transactions"]
    stats = pd.DataFrame([{k: tx[k] for k in ("rows_read", "rows_written", "rows_quarantined", "quarantine_rate")}])
    for suite, frame, params in (
        ("ingest_stats", stats, {}),
        (
            "raw_transactions",
            _gate_frame(spark, lake.version_uri(tables.RAW_TRANSACTIONS, day, version)),
            {"min_rows": low, "max_rows": high},
        ),
        ("raw_labels", _gate_frame(spark, lake.version_uri(tables.RAW_LABELS, day, version)), {"min_rows": 0}),
    ):
        result = _fail_on_data_errors(_gate, frame, suite, ds=ds, params=params)
        results[suite] = {"evaluated": result.evaluated, "report_uri": result.report_uri}
    links.record(links.REPORT_KEY, links.report_url(results["raw_transactions"]["report_uri"]))
    ingest.publish(day, ingested["tables"], stats={"rows": tx["rows_written"]}, cfg=cfg)
    ns = namespace()
    published = [lineage.lake(ns, table, ds, v) for table, v in sorted(ingested["tables"].items())]
    report_lineage(published, published, step="publish_raw")
    return results


@task
def record_ingest(ingested: dict, ds: str | None = None, run_id: str | None = None) -> dict:
    """Write the day's ingest accounting to Postgres (``ingest_runs``), once ``publish_raw`` committed the day.

    A task of its own, after the publish: a Postgres outage fails only this task (with the DAG's retries) and
    never the lake's publish; the features go on without it. Idempotent per ``ds``."""
    written = write_ingest_row(ingested, published_by="feature_pipeline", run_id=run_id)
    return {"ds": ds, "written": written}


def write_ingest_row(ingested: dict, *, published_by: str, run_id: str | None, conn: Any = None) -> bool:
    """Upsert the day's ``ingest_runs`` row from an ingest result (shared with the range backfill, which
    passes its ledger's connection); reports the lineage raw layer -> ``loopline_analyst/ingest_runs``."""
    from loopline import ingest_runs
    from loopline import lake as tables

    cfg = get_config()
    schema = cfg.postgres.schema_
    own = conn is None
    if own:
        conn = open_predictions_db(cfg)
    try:  # the ledger's connection was checked when the range opened it
        values = ingest_runs.row(ingested, published_by=published_by, airflow_run_id=run_id)
        written = ingest_runs.record(conn, schema, values)
    finally:
        if own:
            conn.close()
    ds = str(ingested["ds"])
    ns = namespace()
    report_lineage(
        [
            lineage.lake(ns, t, ds, ingested["version"])
            for t in (tables.RAW_TRANSACTIONS, tables.QUARANTINE_TRANSACTIONS)
        ],
        [lineage.analyst(ns, ingest_runs.TABLE, ds)],
        step="record_ingest",
    )
    return written


# none_failed: runs after a skipped ingest too (force_reingest off, the raw partition reused); a failed or
# upstream-failed ingest or raw gate still stops it.
@task.pyspark(**SPARK_TASK, depends_on_past=True, trigger_rule="none_failed")  # day after day, in order
def build_features(ds: str | None = None, spark: Any = None) -> dict:
    """Spark feature job for the day into a new, uncommitted features version."""
    from spark_jobs import features

    built = _fail_on_data_errors(features.run, spark, dt.date.fromisoformat(ds))
    report_build_lineage(ds, built)
    return built


@task.pyspark(**SPARK_TASK, outlets=[FEATURES_ASSET])
def publish_features(built: dict, ds: str | None = None, spark: Any = None, outlet_events: Any = None) -> dict:
    """GX gate on the features version (nulls, ranges, distribution sanity); when it passes, commit the
    partition and announce it on the Asset (with the day and row count). A failed gate commits nothing."""
    result = gate_and_publish_features(spark, ds, built)
    outlet_events[FEATURES_ASSET].extra = {"ds": ds, "rows": built["rows"], "uri": result["uri"]}
    return result


def gate_and_publish_features(spark: Any, ds: str, built: dict) -> dict:
    """``publish_features``' work, shared with the range backfill: the features gate, then the commit."""
    from spark_jobs import features

    frame = _gate_frame(spark, built["uri"])
    result = _fail_on_data_errors(_gate, frame, "features", ds=ds, params={"min_rows": 1})
    uri = features.publish(dt.date.fromisoformat(ds), built["version"], built["rows"])
    partition = [lineage.lake(namespace(), "features", ds, built["version"])]
    report_lineage(partition, partition, step="publish_features")
    return {"evaluated": result.evaluated, "report_uri": result.report_uri, "uri": uri}

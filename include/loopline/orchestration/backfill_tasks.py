"""Tasks of the ``backfill_range`` DAG: :mod:`loopline.backfill` with the daily pipeline's own steps.

Each day goes through what ``feature_pipeline`` runs for it, in the same order and through the same jobs,
gates and commits: the Spark jobs over a chunk's days at once (:func:`spark_jobs.ingest.run_days`,
:func:`spark_jobs.features.run_days`, each day's rows on their own, as a daily run computes them), the gates and
commits per day (:func:`~loopline.orchestration.feature_tasks.gate_and_publish_raw`,
:func:`~loopline.orchestration.feature_tasks.gate_and_publish_features`), so a day published by a range is the
day the daily run publishes. Progress goes to the task log and to
``backfill_runs`` after every day.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

from airflow.sdk import AssetAlias, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from loopline.config import get_config, resolve_uri
from loopline.orchestration.database import connect, open_predictions_db
from loopline.orchestration.feature_tasks import FEATURES_ASSET
from loopline.orchestration.spark_access import SPARK_TASK

# The range emits one event on loopline_features per published day (extra: ds, rows, uri, as the daily run),
# through an alias: a task's own outlet carries one event, an alias one per distinct extra.
BACKFILL_ALIAS = AssetAlias(name="loopline_features_backfill", group="loopline")
# What a range re-scores with its trigger form's ``rescore`` on.
SCORE_DAG_ID = "batch_score"

log = logging.getLogger(__name__)


def range_params() -> dict[str, Any]:
    """``backfill_range``'s trigger form (typed Params)."""
    from loopline.orchestration.forms import backfill_params

    return backfill_params()


def _chunk_step(spark: Any, cfg: Any = None, conn: Any = None, run_id: str | None = None):
    """A chunk of days through the daily pipeline's steps, yielding each day once it is published.

    First each day's PostgreSQL and S3 inputs are extracted into its drop (as ``extract_sources``) and the drop
    is checked; the days up to the first one that fails are ingested in one Spark pass
    (:func:`spark_jobs.ingest.run_days`). Then each day in order, as ``feature_pipeline`` runs it: quarantine
    commit, raw gates and commit, the day's ``ingest_runs`` row through ``conn`` (the ledger's, as
    ``feature_pipeline.record_ingest``; a Postgres outage fails the range, which resumes at the chunk's first
    unpublished day). Then the features of the days whose raw layer was published, in one pass
    (:func:`spark_jobs.features.run_days`), and each day's features gate and commit. A day that fails stops the
    chunk there: the days before it are published first, then :class:`DayFailed`.
    """
    from loopline.backfill import DayFailed, fault_point
    from loopline.config import resolve_uri
    from loopline.landing import Landing
    from loopline.orchestration import feature_tasks as ft
    from loopline.orchestration.lineage import day_scope
    from loopline.sources import SourceError, extract_inputs, extracted_kinds
    from spark_jobs import features, ingest

    cfg = cfg or get_config()
    extracted = extracted_kinds(cfg)
    landing = Landing(resolve_uri(cfg.storage.landing_uri), cfg.storage.aws_conn_id)

    def ready(days: list[dt.date]) -> tuple[list[dt.date], DayFailed | None]:
        """The days up to the first whose inputs cannot be extracted or whose drop is incomplete."""
        for i, day in enumerate(days):
            try:
                if extracted:
                    log.info("ds=%s: extracted %s", day, extract_inputs(cfg, day, connect, extracted))
                ingest.check_drop(landing, day)
            except (SourceError, ingest.DropIncomplete) as exc:
                return days[:i], DayFailed(day, str(exc))
        return days, None

    def publish_raw(day: dt.date, ingested: dict) -> None:
        ds = str(day)
        # The day's lineage as its daily run reports it (same dataset names), in child runs of the task's run.
        try:
            with day_scope(ds):
                ingest.commit_quarantine(day, ingested, cfg)  # as the daily ingest: before the gates
                ft.report_ingest_lineage(ds, ingested)
                fault_point(day, "after_ingest")
                ft.gate_and_publish_raw(spark, ds, ingested)
                if conn is not None:  # as feature_pipeline.record_ingest: right after the raw commit
                    ft.write_ingest_row(ingested, published_by="backfill_range", run_id=run_id, conn=conn)
                fault_point(day, "after_raw")
        except AirflowFailException as exc:  # a data error: the gate's message
            raise DayFailed(day, str(exc)) from exc
        tx = ingested["transactions"]
        log.info(
            "ds=%s: raw published: transactions read %d, written %d, duplicates %d, quarantined %d %s",
            ds,
            tx["rows_read"],
            tx["rows_written"],
            tx["duplicates_dropped"],
            tx["rows_quarantined"],
            tx["quarantined_by_reason"] or "",
        )

    def step(days: list[dt.date]) -> Iterator[tuple[dt.date, dict]]:
        todo, failed = ready(days)
        published: dict[dt.date, dict] = {}
        if todo:
            try:
                ingested = ft._fail_on_data_errors(ingest.run_days, spark, todo)
            except AirflowFailException as exc:
                raise DayFailed(todo[0], str(exc)) from exc
            for day in todo:
                try:
                    publish_raw(day, ingested[day])
                except DayFailed as exc:
                    failed = exc
                    break
                published[day] = ingested[day]
        if published:
            try:
                built = ft._fail_on_data_errors(features.run_days, spark, list(published))
            except AirflowFailException as exc:
                raise DayFailed(next(iter(published)), str(exc)) from exc
            for day, raw in published.items():
                ds = str(day)
                try:
                    with day_scope(ds):
                        ft.report_build_lineage(ds, built[day])
                        done = ft.gate_and_publish_features(spark, ds, built[day])
                        fault_point(day, "after_features")
                except AirflowFailException as exc:
                    raise DayFailed(day, str(exc)) from exc
                log.info("ds=%s: features %d published (%s)", ds, built[day]["rows"], done["uri"])
                rows = raw["transactions"]["rows_written"]
                yield day, {"rows": rows, "feature_rows": built[day]["rows"], "uri": done["uri"]}
        if failed is not None:
            raise failed

    return step


def published_after(lake: Any, end: dt.date, reach: int) -> list[dt.date]:
    """Days after ``end`` with committed features, scanning window by window until ``reach`` empty days."""
    from loopline import lake as tables

    found: list[dt.date] = []
    cursor = end
    while True:
        window = tables.day_range(cursor + dt.timedelta(days=1), cursor + dt.timedelta(days=reach))
        hits = sorted(lake.partitions(tables.FEATURES, window))
        if not hits:
            return found
        found += hits
        cursor = window[-1]


def _ledger(cfg: Any):
    from loopline.backfill import Ledger

    return Ledger(open_predictions_db(cfg), cfg.postgres.schema_)


@task.pyspark(**SPARK_TASK, outlets=[BACKFILL_ALIAS])
def backfill_days(
    spark: Any = None, params: dict | None = None, run_id: str | None = None, outlet_events: Any = None
) -> dict:
    """Validate the range, then ingest, gate and featurise its days (and the later days a correction
    touches) in order, publishing each day on its own; a failed day stops the range with its reason."""
    from dataclasses import asdict

    from loopline import backfill
    from loopline.lake import Lake
    from loopline.orchestration.forms import param

    cfg = get_config()
    raw = {name: param(params, name, None) for name in ("start", "end")}
    try:
        start, end = (dt.date.fromisoformat(str(raw[name])) for name in ("start", "end"))
    except ValueError as exc:
        raise AirflowFailException(
            f"range refused, nothing done: start and end are required dates like 2026-01-31, got {raw}"
        ) from exc
    try:
        backfill.check_range(start, end, cfg, connect)
    except backfill.RangeRefused as exc:
        raise AirflowFailException(f"range refused, nothing done: {exc}") from exc
    lake = Lake(resolve_uri(cfg.storage.lake_uri))
    cascade = bool(param(params, "cascade", cfg.backfill.cascade))
    published = published_after(lake, end, backfill.reach_days(cfg)) if cascade else []
    ledger = _ledger(cfg)
    step = _chunk_step(spark, cfg, ledger.conn, run_id)

    def on_day(day: dt.date, done: dict) -> None:
        outlet_events[BACKFILL_ALIAS].add(
            FEATURES_ASSET, extra={"ds": str(day), "rows": done["feature_rows"], "uri": done["uri"]}
        )

    def end_chunk() -> None:
        try:
            spark.catalog.clearCache()  # a chunk's cached relations go before the next chunk's
        except Exception as exc:  # a cache that cannot be cleared costs memory, not correctness
            log.warning("could not clear the Spark cache between chunks: %s", exc)

    try:
        result = backfill.run_range(
            run_id or "manual",
            start,
            end,
            cfg,
            published_features=published,
            ledger=ledger,
            step=step,
            end_chunk=end_chunk,
            on_day=on_day,
            cascade=cascade,
        )
    except backfill.RangeRefused as exc:
        raise AirflowFailException(f"range refused, nothing done: {exc}") from exc
    except backfill.BackfillFault as exc:  # a drill: fail without retries, as a crash the operator reruns
        raise AirflowFailException(f"{exc}; rerun the same range to resume") from exc
    except backfill.DayFailed as exc:
        raise AirflowFailException(
            f"range {start} .. {end} stopped at ds={exc.day}: {exc.reason}. Days before it are published; "
            "fix the drop and rerun the same range (it resumes at that day)."
        ) from exc
    finally:
        ledger.conn.close()
    log.info(
        "range %s .. %s done: %d day(s) published (%d recomputed after it), %d rows in %.1f s; stale outputs: %s",
        start,
        end,
        len(result.published),
        len(result.cascade),
        result.rows,
        result.seconds,
        result.stale_flagged or "none",
    )
    return asdict(result)


@task
def plan_rescore(params: dict | None = None) -> list[dict[str, str]]:
    """With the trigger form's ``rescore`` on (and the range succeeded): the ``batch_score`` runs to clear and run
    again, one per day whose scores are stale (:meth:`loopline.backfill.Ledger.stale_score_runs`, the days
    ``loopline rescore-stale`` re-scores), as ``trigger_rescore``'s arguments. Off: skipped, saying how to
    re-score later."""
    from loopline.orchestration.forms import param

    if not param(params, "rescore", False):
        raise AirflowSkipException(
            "rescore is off: nothing re-scored. The days whose scores this range made stale are listed in "
            f"{get_config().postgres.schema_}.stale_days; re-score them with `loopline rescore-stale` (one "
            f"{SCORE_DAG_ID} backfill), or clear their {SCORE_DAG_ID} runs"
        )
    cfg = get_config()
    ledger = _ledger(cfg)
    try:
        runs = ledger.stale_score_runs()
    finally:
        ledger.conn.close()
    by_hand = [str(day) for day, run_id in runs.items() if run_id is None]
    if by_hand:
        log.warning(
            "stale day(s) loaded without a %s run to clear, left to `loopline rescore-stale`: %s",
            SCORE_DAG_ID,
            ", ".join(by_hand),
        )
    planned = [
        {"trigger_run_id": run_id, "logical_date": f"{day}T00:00:00+00:00"} for day, run_id in runs.items() if run_id
    ]
    if planned:
        log.info("re-scoring %d stale day(s): %s", len(planned), ", ".join(str(day) for day in runs if runs[day]))
    else:
        log.info("no stale scores: nothing to re-score")
    return planned

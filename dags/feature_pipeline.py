"""feature_pipeline: one day's landing drop → validated raw partition → validated feature partition."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, chain

from loopline.config import get_config
from loopline.orchestration import feature_tasks as t
from loopline.orchestration.alerts import deadlines
from loopline.orchestration.defaults import DEFAULT_ARGS, tags
from loopline.orchestration.forms import feature_params
from loopline.orchestration.links import HealthPageLink, ValidationReportLink, attach
from loopline.orchestration.source_tasks import wait_for_inputs

DOC = """
# feature_pipeline

## What it does
For the logical date `ds`: waits for the day's landing drop (`_SUCCESS` markers of transactions and
labels), ingests it with Spark (contract enforcement, UTC/EUR normalisation, exact-duplicate removal,
per-row quarantine with reasons), gates the raw data with Great Expectations, publishes the raw layer,
builds per-transaction features (velocity windows, amount vs history, novelty flags, label-based risk),
gates them and publishes the feature partition (Asset `loopline_features`).

Tasks: `wait_for_drop` (both markers) → `wait_for_range_backfill` (while a running `backfill_range` holds
the day) → `ingest_drop` → `publish_raw` (GX gate, then commit) →
`build_features` → `publish_features` (GX gate, then commit and Asset event); beside the features,
`record_ingest` writes the day's row counts and quarantine to Postgres once the raw layer is committed.
Write-audit-publish: each publish task validates the uncommitted version and flips the pointer only when
every suite passed.

## Inputs
- Landing: `<landing>/transactions/ds=<ds>/*.csv[.gz]`, `<landing>/labels/ds=<ds>/*.csv[.gz]`, each with `_SUCCESS`.
- Lake: yesterday's raw transactions and rolling state (`state/customer_window`, `state/customer_merchants`,
  `state/merchant_risk_window`) plus the daily aggregates entering and leaving its windows; when that state
  is missing or stale (a day in its window was re-ingested or backfilled since) the state is rebuilt from
  the daily aggregates (30 days of customer aggregates, 90 of label aggregates).

- Trigger form (Params): `force_reingest` (default on). Off: a day whose raw layer is already published
  skips `ingest_drop` and `publish_raw` and rebuilds only the features from the published raw partition.

## Outputs
- Lake (each partition committed atomically, old or new, never a mix): `raw/transactions`, `raw/labels`,
  `labels/labeled_transactions`, `aggregates/customer_daily`, `aggregates/merchant_label_daily`,
  `quarantine/transactions`, `quarantine/labels`, `features`, and the day's rolling state
  (`state/customer_window`, `state/customer_merchants`, `state/merchant_risk_window`: committed by
  `build_features`, before the gate, as
  it depends only on published aggregates; its `_CURRENT` stats record the aggregate versions it was built from).
- Validation reports (Data Docs) under `<reports>/gx/<suite>/ds=<ds>/`; Asset event with `ds` and row count.
- Postgres `loopline.ingest_runs`: the day's rows read, published, quarantined (per reason) and its raw version.

## Owner
loopline-data-platform (data engineering on-call).

## Triage
- `wait_for_drop` timed out: the upstream drop never completed; the message names the missing marker.
- `wait_for_range_backfill` failed: a running `backfill_range` held the day longer than
  `backfill.daily_wait_seconds`; the message names it. Once it has finished, clear this task with downstream.
- `ingest_drop` failed on "history": run earlier days first (in a backfill each day waits for the previous
  one: `wait_for_downstream` on the ingest, `depends_on_past` on the features).
- `publish_raw` / `publish_features` failed on a GX gate (each task gates, then commits only what passed):
  the message lists failed expectations and the task's **Validation report** link; look at
  `quarantine/*/ds=<ds>` for rejected rows and their reasons. Nothing was published for the day.
- `record_ingest` failed (Postgres down or not migrated): the day is published in the lake regardless; only
  its `ingest_runs` row (health page volumes) is missing. Clear the task once Postgres is back.
- Rerunning any day is safe: every write is a new version and a pointer flip. Re-ingesting an earlier day
  makes the next feature run rebuild its state (logged and in the task's return value: `state_path`).
- Backfill: `airflow backfill create --dag-id feature_pipeline --from-date 2026-01-01 --to-date 2026-01-31`.
"""

cfg = get_config()

with DAG(
    dag_id="feature_pipeline",
    description="Landing drop → Spark ingest → GX gate → Spark features → GX gate → Asset",
    # Data intervals: the run for ds=D starts once D is over (D+1 00:00 UTC), when the drop can be complete.
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    # Days build on earlier days' aggregates: one run at a time, oldest first, also in backfills.
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    deadline=deadlines("feature_pipeline", cfg),  # lateness alerts: alerts.lateness
    params=feature_params(),
    tags=tags("features", "ingestion", "validation", "spark", "backfillable"),
    doc_md=DOC,
) as dag:
    ingested = t.ingest_drop()
    built = t.build_features()
    published_raw = attach(t.publish_raw(ingested), ValidationReportLink())
    chain(
        # A day a running backfill_range holds waits for it (a range started after the check is not seen).
        wait_for_inputs(cfg, lockout=t.range_lockout(cfg)),
        ingested,
        published_raw,
        built,
        attach(t.publish_features(built), ValidationReportLink(), HealthPageLink()),
    )
    # After the commit, beside the features: a Postgres outage fails (and retries) only this task.
    published_raw >> t.record_ingest(ingested)

"""backfill_range: a range of days through the daily pipeline's steps in one run, each day published on its own."""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG

from loopline.orchestration import backfill_tasks as t
from loopline.orchestration.defaults import DEFAULT_ARGS, tags

DOC = """
# backfill_range

## What it does
Backfills the days `start` .. `end` (trigger form) in one task, in chunks (the first of `backfill.chunk_days`, the
next of about `backfill.chunk_rows` transactions): the chunk's drops in one Spark ingest pass, then per day in
order the quarantine commit, the GX gates on raw and the commit, then the chunk's features in one Spark pass, then
per day the features GX gate and commit. Every day is published exactly as its daily run would publish it, each day
committed atomically on its own (the Spark session's cache is cleared between chunks). Then, unless `cascade` is
off, the already-published later days whose features read a day of the range are recomputed in order (a corrected
drop), and their scores and drift reports are flagged stale (`loopline.stale_days`). With `rescore` on, once the
range succeeded, the `batch_score` run of every day with stale scores is cleared, so it scores the day again; off,
re-score later with `loopline rescore-stale`.

Tasks: `backfill_days` → `plan_rescore` (skipped when `rescore` is off) → `trigger_rescore` (one per stale
day). Created from the CLI with `loopline backfill --start ... --end ...`, or from this form.

While a range runs, `feature_pipeline`'s run for a day it holds waits (`wait_for_range_backfill`).

## Inputs
- Params: `start`, `end` (dates, inclusive), `cascade` (default on), `rescore` (default off).
- Landing: every day's drop with both `_SUCCESS` markers; a range beyond the delivered data is refused.
  PostgreSQL and S3 inputs (`sources`) are extracted into each day's drop first (as `extract_sources`); the
  range is refused when an S3 day has no marker or a PostgreSQL watermark has not closed its last day.
- Lake: the earlier days' published aggregates and state (as `feature_pipeline`).

## Outputs
- Lake: per day the raw layer, quarantine, features and rolling state, exactly as `feature_pipeline`.
- Asset `loopline_features`: one event per published day (extra: `ds`, `rows`, `uri`), through the alias
  `loopline_features_backfill`; `batch_score` waits on the published partition as for a daily run.
- Postgres `loopline.backfill_runs`: progress (days done/total, rows/s, current chunk, ETA), the day a range
  stopped at and why; `scoring_runs.stale` / `drift_runs.stale` for the recomputed days.

## Owner
loopline-data-platform (data engineering on-call).

## Triage
- "range refused, nothing done": start after end, days without a complete drop, longer than
  `backfill.max_days`, or days held by another running backfill. Fix the range and trigger again.
- "stopped at ds=D": D failed its gate (the message lists the failed expectations and the report; rejected rows
  are under `quarantine/*/ds=D`). Days before D are published, later days are not. Fix the drop,
  then trigger the same range again (or clear the task): it resumes at D (`backfill_runs.next_ds`).
- A killed worker leaves every day published completely or not at all; the rerun resumes at the first day
  without published features (the start of the chunk it was in when it died after the chunk's raw commits).
- `trigger_rescore` failed: `batch_score` is paused (a cleared run would wait; unpause it, then clear the task),
  or the day's run could not be cleared (see its log); `loopline rescore-stale` re-scores every stale day in
  one backfill.
- Progress: the task log prints a line per day; `SELECT * FROM loopline.backfill_runs ORDER BY started_at DESC`.
"""

with DAG(
    dag_id="backfill_range",
    description="Range backfill: ingest, gate and featurise start..end in one run, publishing each day",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # overlapping ranges are refused anyway; one range at a time keeps the lake's order
    default_args=DEFAULT_ARGS,
    params=t.range_params(),
    tags=tags("features", "ingestion", "validation", "spark"),
    doc_md=DOC,
) as dag:
    rescore = t.plan_rescore()
    t.backfill_days() >> rescore  # all_success: only a range that succeeded re-scores
    # Through the Task SDK, not the CLI's request_rescore: that REST client logs in with the local stack's admin
    # password, which a worker does not have. Clearing each stale day's own run (reset_dag_run) re-runs it as
    # the CLI's backfill re-runs completed days, and only the stale days.
    TriggerDagRunOperator.partial(
        task_id="trigger_rescore", trigger_dag_id=t.SCORE_DAG_ID, reset_dag_run=True, fail_when_dag_is_paused=True
    ).expand_kwargs(rescore)

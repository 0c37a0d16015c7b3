"""drift_monitor: nightly drift of features and scores, realized performance, conditional retraining."""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, CronDataIntervalTimetable

from loopline import lake as tables
from loopline.config import get_config
from loopline.orchestration import monitoring_tasks as t
from loopline.orchestration import promotion_tasks as p
from loopline.orchestration.alerts import LooplineNotifier, deadlines
from loopline.orchestration.defaults import DEFAULT_ARGS, tags
from loopline.orchestration.forms import drift_params
from loopline.orchestration.links import HealthPageLink, MlflowLink, ValidationReportLink, attach
from loopline.orchestration.sensors import published_sensor

DOC = """
# drift_monitor

## What it does
For the day `ds` just finished: tests the day's features and champion scores against the reference sample
of the model version that scored them (logged by the trainer), with per-feature Kolmogorov-Smirnov
(numeric) and chi-squared (categorical) tests under a multiple-testing correction, a multivariate MMD test
and a KS test on the score (`drift.backend`: alibi-detect, or the permissive scipy twin with the same
univariate decisions), and chi-squared tests of the share of each `drift.segments` slice of traffic (card
testing, rapid-fire cards, high scores: small fraud patterns that move no whole distribution). The
detector is fitted once per model version and cached as an MLflow artifact of
the model's run. Then measures the realized performance of the day whose labels matured tonight
(`ds - features.label_maturity_days`), and decides: on drift (at least `drift.min_drifted_features`
signals, each a test with p below its threshold and an effect of at least `drift.min_effect`; a segment
whose share grew by `drift.min_segment_excess` counts `drift.segment_signals`; features
whose history windows were still filling on the reference's first day are reported, not counted) or a
realized ROC AUC drop beyond `drift.performance_tolerance`, it triggers `train_model` with a
conf stating the reason, the drifted features and the day, unless a trigger happened within
`drift.cooldown_hours` (counted in nights, so backfills behave like the nights they replay) or a training
run is already queued or running. A grown segment is a *pattern* drift: with
`promotion.retrain_at_label_maturity` it is not retrained at once (the night's rows have no labels yet) but
scheduled for `ds + features.label_maturity_days` in `loopline.scheduled_retrainings`; a covariate drift of the
same night still retrains at once, and a scheduled retraining fires on its night (cooldown and running
trainings permitting). The decision (with its kind and any scheduled night) is sent on every channel of
`alerts.channels`. Then `compare_shadow` compares the `shadow` model (if any) with the champion on the same
matured transactions; a win raises a promotion request and triggers `promote_model` (a person approves), a
loss retires the shadow, and so does no verdict after `promotion.max_shadow_days` compared days, when set
(docs/promotion.md). By hand: `loopline model retire-shadow --reason "..."`.

## Inputs
- Lake: `features/ds=<ds>` and `scores/ds=<ds>` (committed by `feature_pipeline` and `batch_score`);
  `scores/ds=<ds - maturity>` and `labels/labeled_transactions/ds=*` for realized performance.
- MLflow: the scoring model's run (`reference_sample.parquet`, `holdout_roc_auc`).
- Trigger form (Params): `dry_run` (measure and record the decision, prefixed `dry run:`, never trigger) and
  `cooldown_hours` (this run's cooldown instead of `drift.cooldown_hours`).

## Outputs
- Postgres: `loopline.drift_runs` and `loopline.drift_reports` (the day replaced in one transaction),
  `loopline.model_performance`, `loopline.retraining_decisions` (with `drift_kind`, `scheduled_for`),
  `loopline.scheduled_retrainings`, `loopline.shadow_evaluations`, `loopline.promotion_requests`.
- HTML/PNG report under `reports/drift/ds=<ds>/` and in the MLflow run `drift_monitor__<ds>`
  (experiment `drift.experiment`; the URL is in the `detect_drift` log and XCom).
- A `train_model` run `drift_monitor__<ds>` when retraining is warranted (now, or a scheduled one due tonight);
  a notification either way. A `promote_model` run `promote_model__v<version>` when the shadow won.

## Owner
loopline-data-platform (ML platform on-call).

## Triage
- `wait_for_scores` skipped: `batch_score` did not publish the day (no champion yet, or its run failed);
  nothing was measured, nothing is reported as drift. Fix batch_score for `ds`, then clear this run.
- `detect_drift` skipped: an input is missing (features, scores, the model's reference sample); the log
  says which and what to do.
- `measure_performance` skipped: the day whose labels matured tonight was never scored.
- `skip_retraining` ran although drift was found: see `decide_retraining`'s log (cooldown, training
  already running, or already triggered for this night); `loopline.retraining_decisions` keeps the reason.
- A segment drifted (`drift_runs.drifted_segments`): look at that night's rows in the segment, e.g.
  `SELECT merchant_id, count(*) ... WHERE amount_eur <= 5` for card_testing, before the retraining lands;
  a new fraud pattern is also a case for the fraud team, not only for the model.
- A pattern drift did not retrain: by design; see `SELECT * FROM loopline.scheduled_retrainings WHERE
  state = 'pending'` for when it will. `compare_shadow` waits: its log says how many days and frauds are
  still missing (`promotion.min_days`, `promotion.min_positives`).
- Retraining is idempotent per night: reruns reuse run id `drift_monitor__<ds>` and never start a second one.
- `confirm_trigger` failed: the trigger did not create the `train_model` run (see `trigger_training`'s log);
  the night's row stays `trigger_state = 'pending'` (`triggered` false). Fix the cause and clear the night's
  run: it decides again and triggers again (a run that did get created is confirmed, not duplicated).
"""

cfg = get_config()

with DAG(
    dag_id="drift_monitor",
    description="Nightly drift (alibi-detect / scipy) + realized performance → train_model when warranted",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    # Nights decide in order: the cooldown reads the previous nights' decisions. Backfills may ignore this; the
    # decide step's per-model advisory lock keeps two concurrent nights from both triggering regardless.
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    deadline=deadlines("drift_monitor", cfg),  # lateness alerts: alerts.lateness
    params=drift_params(cfg),
    tags=tags("monitoring", "training"),
    doc_md=DOC,
) as dag:
    # No scores for the day means nothing to measure: skip the night with the sensor's message, never alarm.
    scores = published_sensor(cfg, tables.SCORES, "wait_for_scores", soft_fail=True)
    drift = attach(t.detect_drift(), MlflowLink(), ValidationReportLink(), HealthPageLink())
    performance = t.measure_performance()
    decision = t.decide_retraining.override(on_success_callback=[LooplineNotifier("drift")])(drift, performance)
    scores >> drift
    trigger = TriggerDagRunOperator(
        task_id=t.TRIGGER_TASK_ID,
        trigger_dag_id=t.TRAIN_DAG_ID,
        trigger_run_id=t.train_run_id("{{ ds }}"),
        conf=t.trigger_conf(),
        skip_when_already_exists=True,  # a rerun of the night never starts a second training
        retries=1,
    )
    decision >> [trigger, EmptyOperator(task_id=t.SKIP_TASK_ID)]
    # Two-phase: decide records the trigger as pending; only the run's existence confirms it.
    trigger >> t.confirm_trigger()
    # The shadow (promotion.policy shadow_first) judged against the champion on tonight's matured labels.
    judged = p.compare_shadow()
    performance >> judged
    request = TriggerDagRunOperator(
        task_id=p.REQUEST_TASK_ID,
        trigger_dag_id=p.PROMOTE_DAG_ID,
        trigger_run_id=p.promote_run_id(
            "{{ ti.xcom_pull(task_ids='" + p.COMPARE_TASK_ID + "', key='" + p.CONF_KEY + "')['version'] }}"
        ),
        conf=judged[p.CONF_KEY],  # native types: the Params are integers
        skip_when_already_exists=True,  # one approval run per version
        retries=1,
    )
    judged >> [request, EmptyOperator(task_id=p.NO_REQUEST_TASK_ID)]

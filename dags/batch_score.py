"""batch_score: score a day's validated features with the champion and load them into Postgres atomically."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable

from loopline import lake as tables
from loopline.config import get_config
from loopline.orchestration import scoring_tasks as t
from loopline.orchestration.alerts import deadlines
from loopline.orchestration.defaults import DEFAULT_ARGS, tags
from loopline.orchestration.forms import score_params
from loopline.orchestration.links import HealthPageLink, MlflowLink, attach
from loopline.orchestration.sensors import published_sensor

DOC = """
# batch_score

## What it does
For the logical date `ds`: waits until the day's features are published (committed only after their
Great Expectations gate passed), pins `champion` (and `challenger`, if any) to concrete registry versions,
scores every transaction on Spark in Arrow batches (the model is loaded once per executor), decides at the
version's own threshold (chosen on its validation data by `scoring.threshold_policy`, recorded with the version;
`scoring.threshold` for versions without one), records the day's flag rate against the policy's band (a day
outside it logs an ALERT and is marked in `scoring_runs`) and attaches the top reason codes to flagged
transactions (XGBoost TreeSHAP; MLP occlusion). The scores partition is committed to the lake atomically,
then the day is **replaced** in Postgres in one transaction (delete the day, COPY, record the run): analysts see
the old day or the new one.

## Inputs
- Lake: `features/ds=<ds>` (committed by `feature_pipeline`).
- MLflow registry: `models:/<registered_model>@champion` (required), `@challenger` (optional shadow).
- Trigger form (Params): `model_alias` (champion or challenger), `model_version` (a concrete version, e.g.
  to re-score a day with a rolled-back model; overrides the alias), `shadow` (challenger shadow scoring).

## Outputs
- Lake: `scores/ds=<ds>` and `scores_shadow/ds=<ds>` (versioned, atomic pointer).
- Postgres: `loopline.transaction_scores`, `loopline.transaction_scores_shadow`, `loopline.scoring_runs`,
  view `loopline.latest_scores`; Asset `loopline_scores` (extra: day, rows, model version).

## Owner
loopline-data-platform (ML platform on-call).

## Triage
- `wait_for_features` timed out: `feature_pipeline` did not publish the day (look at its run for `ds`).
- `resolve_models` failed with "no champion": train and gate a model (`train_model`), then clear this run.
- `score_*` failed: see the Spark log; nothing was published for the day (the lake pointer did not move).
- `load_*` failed: the transaction rolled back; Postgres still holds the previous version of the day.
- Re-score history with a new champion: `airflow backfill create --dag-id batch_score --from-date ...
  --to-date ... --reprocess-behavior completed` (each run re-resolves the champion and replaces its day).
"""

cfg = get_config()

with DAG(
    dag_id="batch_score",
    description="Published features → champion (+ shadow challenger) scores on Spark → Postgres, day by day",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,  # days are independent; the Spark pool bounds the load on the cluster
    default_args=DEFAULT_ARGS,
    deadline=deadlines("batch_score", cfg),  # lateness alerts: alerts.lateness
    params=score_params(cfg),
    tags=tags("scoring", "spark", "backfillable"),
    doc_md=DOC,
) as dag:
    models = published_sensor(cfg, tables.FEATURES, "wait_for_features") >> t.resolve_models()
    attach(t.load_scores(attach(t.score_champion(models), MlflowLink())), HealthPageLink())
    t.load_shadow_scores(attach(t.score_challenger(models), MlflowLink()))

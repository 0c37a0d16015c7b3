"""train_model: train a candidate, gate it against the champion on the same holdout, register it."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from loopline.config import get_config
from loopline.orchestration import training_tasks as t
from loopline.orchestration.alerts import LooplineNotifier
from loopline.orchestration.defaults import DEFAULT_ARGS, tags
from loopline.orchestration.links import HealthPageLink, MlflowLink, ModelCardLink, attach

DOC = """
# train_model

## What it does
Builds the training set from the feature partitions of a window and the labels reported before the
cut-off (time-based split: train / validation / holdout = the most recent days), trains XGBoost or a
PyTorch MLP with one trainer entrypoint (`python -m loopline.training`), logs everything to MLflow
(params, data fingerprint, metrics, plots, model, holdout and drift reference sample), then registers
the model and moves **one** alias: `champion` only if it beats the current champion on the same holdout
by `gate.min_improvement` without breaking guard-rails (the first model needs `gate.absolute_floor`),
otherwise `challenger`.

Runs on `training.schedule` (weekly by default; null turns routine retraining off), when `drift_monitor`
triggers it, or from the trigger form.

## Inputs
- Lake: `features/ds=*` and `labels/labeled_transactions/ds=*` of the window.
- Trigger form (Params): model type, window, rounds, learning rate, cut-off, reason. `drift_monitor`
  triggers it with a conf stating the reason, drifted features and day.

## Outputs
- An alert on every channel of `alerts.channels` with the gate's verdict (promoted, or kept as challenger).
- MLflow run in experiment `loopline-fraud`; registered model `loopline-fraud` with aliases.
- Postgres `loopline.model_alias_history` (one row per alias move:
  `pending` until MLflow's alias has moved, then `applied`, or `abandoned` by the next gate's reconcile after
  a crash; view `loopline.champion_by_day` counts applied rows).
- Lake pins (`<lake>/_PINS/`): the trainer pins every feature/label version it reads under
  `train_model__<run_id>` (the lake's sweep keeps pinned versions); `gate_candidate` pins the registered
  version's data fingerprint as `model:<name>:v<version>` (released once the version is deleted from the
  registry); `release_inputs` lifts the run's pin whatever happened.

## Owner
loopline-data-platform (ML platform on-call).

## Triage
- `train_candidate` failed with "no data": the window has no mature labelled rows; widen `window_days`
  or check `feature_pipeline` ran for those days. Pod errors: the pod is kept on failure (`kubectl logs`).
- `gate_candidate` failed: the candidate could not be loaded or predicts garbage; the champion was not
  touched. A candidate that merely loses is **not** a failure: it becomes `challenger` (see the task log).
- Roll back a bad champion in one step: `loopline model rollback --reason "..."`.
- Runs never overlap (`max_active_runs=1`): concurrent triggers queue.
- A run killed so hard that `release_inputs` never ran leaves `_PINS/train_model__<run_id>-*.json`: the
  versions it names are kept; clear `release_inputs` of that run (or delete the marker) to free them.
"""

cfg = get_config()

with DAG(
    dag_id="train_model",
    description="Train → evaluate against the champion on the same holdout → register, promote via the gate",
    schedule=cfg.training.schedule,  # routine retraining; drift_monitor triggers the rest
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # concurrent triggers queue rather than race for the alias
    default_args=DEFAULT_ARGS,
    params=t.params(cfg),
    tags=tags("training", "registry", "gpu"),
    doc_md=DOC,
) as dag:
    trained = attach(t.train_candidate(cfg), MlflowLink())
    # The gate's verdict (promoted, or kept as challenger) goes to every alert channel.
    gated = attach(
        t.gate_candidate.override(on_success_callback=[LooplineNotifier("promotion")])(trained),
        MlflowLink(),
        ModelCardLink(),
        HealthPageLink(),
    )
    # The lake versions the trainer read stay pinned until here, whatever happened (all_done).
    [trained, gated] >> t.release_inputs()

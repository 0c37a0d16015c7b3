"""``loopline demo``: the loop on embedded defaults, through the real scheduler.

Brings the local stack up, generates landing drops with a drift over the last nights, publishes the whole
history with one range backfill (``backfill_range``: every day ingested, gated and featurised as
``feature_pipeline`` would, without a DAG run per day) while printing its progress, trains the first
champion with ``train_model`` as of the first monitored day, scores the monitored
days with a ``batch_score`` backfill, replays ``drift_monitor`` over those nights (a drifted night triggers
``train_model``), re-scores the drifted days when the champion changed, and ends with a summary of runs,
rows at each stage, quarantined rows, the retraining and the champions' AUC against the true-probability
AUC, and where the UIs are. The stack keeps running afterwards (``make down`` stops it).

Modules
-------
:mod:`~loopline.demo.plan` (:class:`DemoPlan`, the demo's sources), :mod:`~loopline.demo.runs` (Airflow runs
and backfills), :mod:`~loopline.demo.summary` (what the loop produced), :mod:`~loopline.demo.approval` (the
promotion path) and :mod:`~loopline.demo.runner` (:func:`run`). Their public names are importable from
``loopline.demo``.
"""

from loopline.demo.approval import promotion_path, wait_for_approval
from loopline.demo.plan import (
    DEMO_ENVIRONMENT,
    SOURCE_SCHEMA,
    SOURCES,
    DemoPlan,
    default_start,
    source_environment,
    write_source_tables,
)
from loopline.demo.runner import run
from loopline.demo.runs import (
    BACKFILL_MAX_ACTIVE_RUNS,
    POLL_SECONDS,
    backfill,
    create_backfill,
    dag_runs,
    follow_backfill,
    range_backfill,
    run_states,
    trigger_and_wait,
    wait_for_dags,
    wait_for_run,
    wait_for_runs,
)
from loopline.demo.runs import _api as _api  # the benchmarks reach the demo's REST client
from loopline.demo.summary import (
    EXAMPLE_SQL,
    alert_summary,
    champion,
    champion_summary,
    lake_summary,
    retraining_decisions,
    scored_auc,
)

__all__ = [
    "BACKFILL_MAX_ACTIVE_RUNS",
    "DEMO_ENVIRONMENT",
    "EXAMPLE_SQL",
    "POLL_SECONDS",
    "SOURCES",
    "SOURCE_SCHEMA",
    "DemoPlan",
    "alert_summary",
    "backfill",
    "champion",
    "champion_summary",
    "create_backfill",
    "dag_runs",
    "default_start",
    "follow_backfill",
    "lake_summary",
    "promotion_path",
    "range_backfill",
    "retraining_decisions",
    "run",
    "run_states",
    "scored_auc",
    "source_environment",
    "trigger_and_wait",
    "wait_for_approval",
    "wait_for_dags",
    "wait_for_run",
    "wait_for_runs",
    "write_source_tables",
]

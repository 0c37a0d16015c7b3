"""drift_monitor executed by Airflow (`dag.test()`): real alibi-detect, MLflow store, Postgres, trigger.

The lake holds synthetic feature days scored in-process by a real registered model (as batch_score leaves
them); days from DRIFT_START on have a covariate shift (amounts x3, transactions later in the day). Nights run
in order, so the cooldown, the "training already queued" guard and rerun idempotency are exercised on the
decisions Airflow records.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest

from loopline import lake as tables
from loopline.config import get_config
from loopline.lake import Lake
from tests.conftest import dag_environment, environment, finish_training_runs, load_dag, run_day
from tests.drift_data import scored_lake

pytestmark = pytest.mark.e2e

START = dt.date(2026, 1, 1)
DAYS = 9
DRIFT_START = START + dt.timedelta(days=5)
ROWS = 1500
NAME = "loopline-drift-e2e"
SCHEMA = "drift_e2e"
MATURITY = 2


@pytest.fixture(scope="module")
def monitor(airflow_db, postgres, tmp_path_factory):
    root = tmp_path_factory.mktemp("drift_monitor")
    overrides = {
        **dag_environment(root, SCHEMA, NAME),
        "LOOPLINE__FEATURES__LABEL_MATURITY_DAYS": str(MATURITY),
        "LOOPLINE__DRIFT__BACKEND": "alibi",
        "LOOPLINE__DRIFT__REFERENCE_SAMPLE_SIZE": "1500",
    }
    with environment(overrides):
        yield _prepare(root, postgres)


def _prepare(root: Path, postgres) -> tuple:
    postgres.migrate(SCHEMA)  # deploy time, as the owner: the tasks log in as the loader and run no DDL
    run_id = scored_lake(
        root / "lake",
        f"sqlite:///{root / 'mlflow.db'}",
        root / "artifacts",
        NAME,
        start=START,
        days=DAYS,
        drift_start=DRIFT_START,
        rows=ROWS,
    )

    return load_dag("drift_monitor"), root, postgres, run_id


def training_runs() -> list:
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == "train_model").all()
        return [(run.run_id, run.state, dict(run.conf or {})) for run in runs]


def extra_links(dagrun, task_id: str) -> dict[str, str]:
    """The task's extra links as the API server serves them (the XComs the worker stored at the task's end)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter(
            XComModel.dag_id == dagrun.dag_id,
            XComModel.run_id == dagrun.run_id,
            XComModel.task_id == task_id,
            XComModel.key.like("_link_%"),
        )
        return {row.key: row.value for row in rows}


def notifications(root: Path) -> list[dict]:
    """The nights' drift messages sent to the file alert channel (failure alerts share the file)."""
    path = root / "notifications.jsonl"
    alerts = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [alert["details"]["drift"] for alert in alerts if alert["kind"] == "drift"]


def test_a_stable_night_reports_no_drift_and_caches_the_detector(monitor):
    from mlflow import MlflowClient

    dag, root, postgres, run_id = monitor
    day = START + dt.timedelta(days=3)
    dagrun, states = run_day(dag, day)
    assert dagrun.state == "success", states
    assert states["detect_drift"] == "success"
    assert states["skip_retraining"] == "success"
    assert states["trigger_training"] == "skipped"
    assert states["confirm_trigger"] == "skipped"  # nothing decided, nothing to confirm

    runs = postgres.query(f"SELECT drift, signals, drifted_features, mlflow_run_id FROM {SCHEMA}.drift_runs")
    assert len(runs) == 1
    drift, signals, drifted, monitoring_run = runs[0]
    assert drift is False, drifted
    assert signals < 2
    tests = postgres.query(f"SELECT test, count(*) FROM {SCHEMA}.drift_reports WHERE ds = %s GROUP BY 1", day)
    counts = dict(tests)
    assert counts["chi2"] == 3
    assert counts["mmd"] == 1
    assert counts["score_ks"] == 1
    assert counts["segment"] == len(get_config().drift.segments)  # card_testing, night_burst, high_scores
    assert counts["ks"] > 10

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    cached = [item.path for item in client.list_artifacts(run_id, "drift_detector")]
    assert len(cached) == 1  # fitted once for the model version, kept with its run
    report = [item.path for item in client.list_artifacts(monitoring_run, "report")]
    assert "report/report.html" in report
    assert "report/pvalues.png" in report
    assert (root / "reports" / "drift" / f"ds={day}" / "report.html").read_text().count("<tr") > 10
    decision = postgres.query(f"SELECT triggered, reason FROM {SCHEMA}.retraining_decisions WHERE ds = %s", day)
    assert decision[0][0] is False
    assert decision[0][1].startswith("no trigger")
    assert notifications(root)[-1]["triggered"] is False
    links = extra_links(dagrun, "detect_drift")
    assert links["_link_MlflowLink"].endswith(f"/runs/{monitoring_run}")
    assert links["_link_ValidationReportLink"] == f"/loopline/reports/drift/ds={day}/report.html"

    # A rerun replaces the night: same rows, the same monitoring run, the detector not refitted.
    dagrun, _ = run_day(dag, day)
    assert dagrun.state == "success"
    again = postgres.query(f"SELECT count(*) FROM {SCHEMA}.drift_reports WHERE ds = %s", day)
    assert again == [(sum(counts.values()),)]
    assert postgres.query(f"SELECT mlflow_run_id FROM {SCHEMA}.drift_runs") == [(monitoring_run,)]
    assert len(list(client.list_artifacts(run_id, "drift_detector"))) == 1


def test_realized_performance_matches_an_independent_computation(monitor):
    from sklearn.metrics import average_precision_score, roc_auc_score

    dag, root, postgres, _ = monitor
    night_day = START + dt.timedelta(days=4)
    scored_day = night_day - dt.timedelta(days=MATURITY)
    _dagrun, states = run_day(dag, night_day)
    assert states["measure_performance"] == "success", states

    lake = Lake(str(root / "lake"))
    scores = pd.read_parquet(lake.partition(tables.SCORES, scored_day))
    labels = pd.concat(
        pd.read_parquet(uri)
        for uri in lake.partitions(tables.LABELED_TRANSACTIONS, tables.day_range(START, night_day)).values()
    )
    labels = labels[
        pd.to_datetime(labels["reported_at"], utc=True) < pd.Timestamp(night_day + dt.timedelta(days=1), tz="UTC")
    ]
    joined = scores.merge(labels[["transaction_id", "is_fraud"]], on="transaction_id")
    rows = postgres.query(
        f"SELECT rows, unlabelled_rows, positives, roc_auc, pr_auc, reference_roc_auc, performance_drop "
        f"FROM {SCHEMA}.model_performance WHERE ds = %s",
        scored_day,
    )
    assert len(rows) == 1
    n, unlabelled, positives, roc_auc, pr_auc, reference, dropped = rows[0]
    assert (n, unlabelled, positives) == (len(joined), len(scores) - len(joined), int(joined["is_fraud"].sum()))
    assert roc_auc == pytest.approx(roc_auc_score(joined["is_fraud"], joined["score"]), abs=1e-9)
    assert pr_auc == pytest.approx(average_precision_score(joined["is_fraud"], joined["score"]), abs=1e-9)
    assert reference == pytest.approx(0.97)
    enough = positives >= get_config().drift.performance_min_positives
    assert dropped == (enough and reference - roc_auc >= 0.05)
    if not enough and reference - roc_auc >= 0.05:
        note = postgres.query(f"SELECT note FROM {SCHEMA}.model_performance WHERE ds = %s", scored_day)[0][0]
        assert "not evidence of a drop" in note


def test_drift_triggers_training_once_then_guards_and_cooldown_hold(monitor):
    dag, root, postgres, _ = monitor
    first = DRIFT_START
    dagrun, states = run_day(dag, first)
    assert dagrun.state == "success", states
    assert states["trigger_training"] == "success"
    assert states["confirm_trigger"] == "success"
    assert states["skip_retraining"] == "skipped"
    runs = training_runs()
    assert [run[0] for run in runs] == [f"drift_monitor__{first}"]
    confirmed = postgres.query(
        f"SELECT triggered, trigger_state, triggered_run_id, confirmed_at IS NOT NULL "
        f"FROM {SCHEMA}.retraining_decisions WHERE ds = %s",
        first,
    )
    assert confirmed == [(True, "confirmed", f"drift_monitor__{first}", True)]
    # A covariate shift is learnt from tonight's rows: retrained at once, nothing scheduled for later.
    kind = postgres.query(f"SELECT drift_kind, scheduled_for FROM {SCHEMA}.retraining_decisions WHERE ds = %s", first)
    assert kind == [("covariate", None)]
    assert postgres.query(f"SELECT count(*) FROM {SCHEMA}.scheduled_retrainings") == [(0,)]
    conf = runs[0][2]
    assert conf["triggered_by"] == "drift_monitor"
    assert conf["ds"] == str(first)
    assert "data drift" in conf["reason"]
    assert "amount_eur" in conf["drifted_features"]
    assert conf["cutoff"] == str(first + dt.timedelta(days=1))
    assert notifications(root)[-1]["triggered"] is True

    # The next drifted night, while that training is still queued: no second training.
    dagrun, states = run_day(dag, first + dt.timedelta(days=1))
    assert states["skip_retraining"] == "success"
    assert states["trigger_training"] == "skipped"
    reason = postgres.query(
        f"SELECT reason FROM {SCHEMA}.retraining_decisions WHERE ds = %s", first + dt.timedelta(days=1)
    )
    assert "already running or queued" in reason[0][0]

    # Once it finished, the cooldown (72 h of nights) still holds the night after.
    finish_training_runs()
    dagrun, states = run_day(dag, first + dt.timedelta(days=2))
    assert states["skip_retraining"] == "success"
    reason = postgres.query(
        f"SELECT reason FROM {SCHEMA}.retraining_decisions WHERE ds = %s", first + dt.timedelta(days=2)
    )
    assert "cooldown" in reason[0][0]
    assert "would trigger for data drift" in reason[0][0]

    # Rerunning the triggering night starts nothing new and keeps its record.
    dagrun, states = run_day(dag, first)
    assert states["skip_retraining"] == "success"
    assert len(training_runs()) == 1
    kept = postgres.query(f"SELECT triggered, train_run_id FROM {SCHEMA}.retraining_decisions WHERE ds = %s", first)
    assert kept == [(True, f"drift_monitor__{first}")]
    drifted = postgres.query(f"SELECT count(*) FROM {SCHEMA}.drift_runs WHERE drift")
    assert drifted == [(3,)]


def test_a_failed_trigger_records_pending_and_the_rerun_triggers(monitor, monkeypatch):
    """The last drifted night is 72 h of nights after the first trigger: it wants to retrain. Its trigger
    fails (the API refuses): the night stays pending, not triggered; the rerun triggers and confirms."""
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    dag, _root, postgres, _ = monitor
    night = START + dt.timedelta(days=DAYS - 1)
    finish_training_runs()
    before = len(training_runs())

    def refused(self, context):
        raise RuntimeError("the Airflow API refused the trigger")

    monkeypatch.setattr(TriggerDagRunOperator, "execute", refused)
    monkeypatch.setattr(dag.get_task("trigger_training"), "retries", 0)
    dagrun, states = run_day(dag, night)
    assert states["decide_retraining"] == "success", states
    assert states["trigger_training"] == "failed"
    assert states["confirm_trigger"] == "failed"  # no run exists: nothing confirmed
    assert dagrun.state == "failed"
    assert len(training_runs()) == before
    row = postgres.query(
        f"SELECT triggered, trigger_state, train_run_id, triggered_run_id FROM {SCHEMA}.retraining_decisions "
        "WHERE ds = %s",
        night,
    )
    assert row == [(False, "pending", f"drift_monitor__{night}", None)]

    monkeypatch.undo()
    dagrun, states = run_day(dag, night)  # the rerun of the night, the API back
    assert dagrun.state == "success", states
    assert states["trigger_training"] == "success"
    assert states["confirm_trigger"] == "success"
    assert f"drift_monitor__{night}" in [run[0] for run in training_runs()]
    row = postgres.query(
        f"SELECT triggered, trigger_state, triggered_run_id FROM {SCHEMA}.retraining_decisions WHERE ds = %s", night
    )
    assert row == [(True, "confirmed", f"drift_monitor__{night}")]


def test_a_night_without_scores_ends_without_alarm(monitor, capfd):
    dag, root, postgres, _ = monitor
    day = START + dt.timedelta(days=30)
    dagrun, states = run_day(dag, day)
    assert dagrun.state == "success", states
    assert states["wait_for_scores"] == "skipped"
    assert states["detect_drift"] == "skipped"
    assert states["measure_performance"] == "skipped"
    assert states["skip_retraining"] == "success"
    out = capfd.readouterr().out
    assert "partition not published" in out
    assert "scores/ds=2026-01-31/_CURRENT" in out
    assert postgres.query(f"SELECT count(*) FROM {SCHEMA}.drift_runs WHERE ds = %s", day) == [(0,)]
    assert notifications(root)[-1]["drift"] is None

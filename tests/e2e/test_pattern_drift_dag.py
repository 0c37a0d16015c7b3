"""A fraud pattern is retrained when its labels have matured: drift_monitor executed by Airflow (`dag.test()`)
against a real MLflow store and Postgres, on nights whose card-testing segment grew (3% of the night's rows
become small card-not-present charges: no feature distribution moves by the drift floor, the segment's share
does). The covariate case (retrain at once) is in tests/e2e/test_drift_monitor_dag.py."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from tests.conftest import dag_environment, environment, finish_training_runs, load_dag, run_day
from tests.drift_data import card_testing, scored_lake

pytestmark = pytest.mark.e2e

START = dt.date(2026, 1, 1)
DAYS = 8
DRIFT_START = START + dt.timedelta(days=4)
ROWS = 1500
NAME = "loopline-pattern-e2e"
SCHEMA = "pattern_e2e"
MATURITY = 2


@pytest.fixture(scope="module")
def monitor(airflow_db, postgres, tmp_path_factory):
    root = tmp_path_factory.mktemp("pattern_drift")
    overrides = {
        **dag_environment(root, SCHEMA, NAME),
        "LOOPLINE__FEATURES__LABEL_MATURITY_DAYS": str(MATURITY),
        "LOOPLINE__DRIFT__BACKEND": "scipy",
        "LOOPLINE__DRIFT__REFERENCE_SAMPLE_SIZE": "1500",
    }
    with environment(overrides):
        yield _prepare(root, postgres)


def _prepare(root: Path, postgres) -> tuple:
    postgres.migrate(SCHEMA)
    scored_lake(
        root / "lake",
        f"sqlite:///{root / 'mlflow.db'}",
        root / "artifacts",
        NAME,
        start=START,
        days=DAYS,
        drift_start=DRIFT_START,
        rows=ROWS,
        drift=card_testing,
    )
    finish_training_runs()  # trainings other modules triggered would hold the "already queued" guard
    return load_dag("drift_monitor"), root, postgres


def training_runs() -> list:
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == "train_model").all()
        return [(run.run_id, dict(run.conf or {})) for run in runs]


def scheduled(postgres) -> list[tuple]:
    return postgres.query(
        f"SELECT drift_ds, due_on, state, settled_by FROM {SCHEMA}.scheduled_retrainings ORDER BY drift_ds"
    )


def test_a_pattern_is_retrained_when_its_labels_have_matured(monitor):
    dag, root, postgres = monitor
    night = DRIFT_START
    due = night + dt.timedelta(days=MATURITY)
    before = {run_id for run_id, _ in training_runs()}

    # The first night of the pattern: no retraining now (its rows have no labels), one scheduled for maturity.
    dagrun, states = run_day(dag, night)
    assert dagrun.state == "success", states
    assert states["trigger_training"] == "skipped"
    decided = postgres.query(
        f"SELECT drift_kind, triggered, scheduled_for, reason FROM {SCHEMA}.retraining_decisions WHERE ds = %s", night
    )
    kind, triggered, scheduled_for, reason = decided[0]
    assert (kind, triggered, scheduled_for) == ("pattern", False, due), reason
    assert "card_testing" in reason
    assert f"retraining scheduled for {due}" in reason
    assert scheduled(postgres) == [(night, due, "pending", None)]
    alerts = [json.loads(line) for line in (root / "notifications.jsonl").read_text().splitlines()]
    text = alerts[-1]["details"]["drift"]["text"]
    assert f"retraining scheduled for {due}" in text, text

    # The next pattern night schedules its own; nothing is due yet.
    dagrun, states = run_day(dag, night + dt.timedelta(days=1))
    assert states["trigger_training"] == "skipped", states
    assert [row[2] for row in scheduled(postgres)] == ["pending", "pending"]
    assert {run_id for run_id, _ in training_runs()} == before

    # The night the first drifted day's labels have matured: the retraining fires, with that cut-off.
    dagrun, states = run_day(dag, due)
    assert dagrun.state == "success", states
    assert states["trigger_training"] == "success"
    assert states["confirm_trigger"] == "success"
    target = f"drift_monitor__{due}"
    conf = dict(training_runs())[target]
    assert "scheduled retraining due" in conf["reason"]
    assert conf["cutoff"] == str(due + dt.timedelta(days=1))
    rows = {row[0]: row[1:] for row in scheduled(postgres)}
    assert rows[night] == (due, "fired", target)  # covered by the run that fired
    assert rows[night + dt.timedelta(days=1)][1] == "pending"  # its labels are not matured yet: still waiting
    # analysts read it
    analyst = postgres.connect(postgres.roles.analyst)
    try:
        with analyst.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {SCHEMA}.scheduled_retrainings")
            assert cur.fetchone()[0] == len(rows)
    finally:
        analyst.close()

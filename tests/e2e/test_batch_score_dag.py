"""batch_score executed by Airflow (`dag.test()`): real MLflow registry, Spark scoring, Postgres load."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from loopline import lake as tables
from loopline.lake import Lake
from loopline.training.synthetic import write_synthetic_lake
from tests.conftest import dag_environment, environment, load_dag, run_day
from tests.models import fit, record_digests, register

pytestmark = pytest.mark.e2e

START = dt.date(2026, 1, 1)
DAY = dt.date(2026, 1, 2)
ROWS = 1500
NAME = "loopline-score-e2e"
SCHEMA = "scores_e2e"


@pytest.fixture(scope="module")
def scoring(spark_connect_url, airflow_db, postgres, tmp_path_factory):
    root = tmp_path_factory.mktemp("batch_score")
    overrides = {**dag_environment(root, SCHEMA, NAME, sensor_timeout=4), "LOOPLINE__SCORING__THRESHOLD": "0.1"}
    with environment(overrides):
        postgres.migrate(SCHEMA)  # deploy time, as the owner: the tasks log in as the loader and run no DDL
        write_synthetic_lake(root / "lake", START, 2, rows_per_day=ROWS, seed=4)
        yield load_dag("batch_score"), root, postgres


def tracking(root: Path) -> str:
    return f"sqlite:///{root / 'mlflow.db'}"


def test_without_a_champion_the_run_fails_clearly(scoring, capfd):
    dag, _, _ = scoring
    dagrun, states = run_day(dag, DAY)
    assert dagrun.state == "failed"
    assert states["wait_for_features"] == "success"
    assert states["resolve_models"] == "failed"
    assert states["score_champion"] == "upstream_failed"
    assert "has no 'champion' alias: train and gate a model first" in capfd.readouterr().out


def test_champion_scores_the_day_and_challenger_shadows_it(scoring):
    dag, root, postgres = scoring
    for alias, model in (("champion", fit("xgboost", seed=1)), ("challenger", fit("xgboost", seed=2, rounds=20))):
        version = register(model, tracking(root), root / "artifacts", NAME, alias)
        record_digests(postgres, SCHEMA, tracking(root), NAME, version)  # what the gate records

    dagrun, states = run_day(dag, DAY)
    assert dagrun.state == "success", states
    assert set(states.values()) == {"success"}
    features = pd.read_parquet(Lake(str(root / "lake")).partition(tables.FEATURES, DAY))
    rows = postgres.query(
        "SELECT model_version, count(*), count(DISTINCT transaction_id), sum((decision = 'flag')::int),"
        " count(reasons) FROM scores_e2e.transaction_scores WHERE ds = %s GROUP BY 1",
        DAY,
    )
    assert len(rows) == 1
    version, count, distinct, flagged, explained = rows[0]
    assert (version, count, distinct) == (1, ROWS, ROWS)
    assert flagged == explained > 0
    assert set(postgres.query("SELECT transaction_id FROM scores_e2e.transaction_scores")) == {
        (t,) for t in features["transaction_id"]
    }
    shadow = postgres.query("SELECT model_version, count(*) FROM scores_e2e.transaction_scores_shadow GROUP BY 1")
    assert shadow == [(2, ROWS)]
    runs = postgres.query("SELECT role, model_version, rows_scored, airflow_run_id FROM scores_e2e.scoring_runs")
    assert sorted(r[:3] for r in runs) == [("challenger", 2, ROWS), ("champion", 1, ROWS)]
    assert all(r[3] == dagrun.run_id for r in runs)

    # A rerun of the day replaces it: same rows, no duplicates.
    dagrun, _ = run_day(dag, DAY)
    assert dagrun.state == "success"
    again = postgres.query("SELECT count(*), count(DISTINCT transaction_id) FROM scores_e2e.transaction_scores")
    assert again == [(ROWS, ROWS)]


def test_an_alias_moving_mid_run_does_not_mix_versions(scoring):
    from mlflow import MlflowClient

    dag, root, postgres = scoring
    client = MlflowClient(tracking(root))
    pinned = int(client.get_model_version_by_alias(NAME, "champion").version)
    newer = register(fit("xgboost", seed=3, rounds=30), tracking(root), root / "artifacts", NAME, None)
    record_digests(postgres, SCHEMA, tracking(root), NAME, newer)

    def promote_newer(context):
        client.set_registered_model_alias(NAME, "champion", str(newer))

    # The alias moves after the run resolved its models and before the day is scored.
    dag.get_task("score_champion").on_execute_callback = [promote_newer]
    try:
        dagrun, states = run_day(dag, DAY)
    finally:
        dag.get_task("score_champion").on_execute_callback = []
    assert dagrun.state == "success", states
    assert int(client.get_model_version_by_alias(NAME, "champion").version) == newer  # it did move
    versions = postgres.query("SELECT DISTINCT model_version FROM scores_e2e.transaction_scores WHERE ds = %s", DAY)
    assert versions == [(pinned,)]
    lake_versions = pd.read_parquet(Lake(str(root / "lake")).partition(tables.SCORES, DAY))["model_version"]
    assert set(lake_versions) == {pinned}

    # The next run resolves again and re-scores the day with the new champion.
    dagrun, _ = run_day(dag, DAY)
    assert dagrun.state == "success"
    assert postgres.query("SELECT DISTINCT model_version FROM scores_e2e.transaction_scores") == [(newer,)]


def test_the_trigger_form_scores_the_version_it_names(scoring):
    """A manual run with ``model_version`` (e.g. re-scoring a day with a rolled-back model) scores with that
    version although ``champion`` points elsewhere, and ``shadow: false`` skips the challenger."""
    from mlflow import MlflowClient

    dag, root, postgres = scoring
    champion = int(MlflowClient(tracking(root)).get_model_version_by_alias(NAME, "champion").version)
    assert champion != 1
    dagrun = dag.test(
        logical_date=dt.datetime.combine(DAY, dt.time(), tzinfo=dt.UTC), run_conf={"model_version": 1, "shadow": False}
    )
    states = {ti.task_id: ti.state for ti in dagrun.get_task_instances()}
    assert dagrun.state == "success", states
    assert states["score_challenger"] == "skipped"
    assert postgres.query("SELECT DISTINCT model_version FROM scores_e2e.transaction_scores WHERE ds = %s", DAY) == [
        (1,)
    ]
    runs = postgres.query(
        "SELECT role, model_version FROM scores_e2e.scoring_runs WHERE airflow_run_id = %s", dagrun.run_id
    )
    assert runs == [("champion", 1)]


def test_a_day_without_published_features_times_out_with_advice(scoring, capfd):
    dag, _, _ = scoring
    dagrun, states = run_day(dag, DAY + dt.timedelta(days=10))
    assert dagrun.state == "failed"
    assert states["wait_for_features"] == "failed"
    out = capfd.readouterr().out
    assert "partition not published" in out
    assert "feature_pipeline" in out

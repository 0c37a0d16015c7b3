"""train_model executed by Airflow (`dag.test()`): the local runner really trains, the gate really gates."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from loopline.config import get_config
from loopline.training.synthetic import write_synthetic_lake
from tests.conftest import dag_environment, environment, load_dag

pytestmark = pytest.mark.e2e

START = dt.date(2026, 1, 1)
CUTOFF = dt.date(2026, 2, 5)


@pytest.fixture(scope="module")
def train_dag(airflow_db, postgres, tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    overrides = {
        **dag_environment(root, schema="loopline"),
        "LOOPLINE__FEATURES__LABEL_MATURITY_DAYS": "10",
        "LOOPLINE__TRAINING__WINDOW_DAYS": "30",
        "LOOPLINE__TRAINING__HOLDOUT_DAYS": "5",
        "LOOPLINE__TRAINING__VALIDATION_DAYS": "4",
        "LOOPLINE__GATE__ABSOLUTE_FLOOR": "0.6",
    }
    with environment(overrides):
        write_synthetic_lake(root / "lake", START, 36, rows_per_day=600, seed=3)
        yield load_dag("train_model"), postgres


def run(dag, reason: str, cutoff: dt.date | None = CUTOFF):
    conf = {"reason": reason, "max_rounds": 60} | ({"cutoff": str(cutoff)} if cutoff else {})
    dagrun = dag.test(logical_date=dt.datetime(2026, 2, 5, tzinfo=dt.UTC), run_conf=conf)
    return dagrun, {ti.task_id: ti.state for ti in dagrun.get_task_instances()}


def test_first_model_is_champion_then_an_equal_one_is_challenger(train_dag):
    from mlflow import MlflowClient

    dag, postgres = train_dag
    dagrun, states = run(dag, "first model")
    assert dagrun.state == "success", states
    cfg = get_config()
    client = MlflowClient(cfg.resolve(cfg.mlflow.tracking_uri))
    champion = client.get_model_version_by_alias(cfg.mlflow.registered_model, "champion")
    assert int(champion.version) == 1
    run_info = client.get_run(champion.run_id)
    assert run_info.data.metrics["holdout_roc_auc"] > 0.7
    assert run_info.data.tags["loopline.reason"] == "first model"
    # The run's pin on the lake versions it read is gone; v1's fingerprint stays pinned.
    assert states["release_inputs"] == "success"
    from loopline.config import resolve_uri
    from loopline.lake import FEATURES, Lake, model_pin_id
    from loopline.training.dataset import fingerprint_versions

    pins = {pin.pin_id: pin for pin in Lake(resolve_uri(cfg.storage.lake_uri)).pins()}
    assert list(pins) == [model_pin_id(cfg.mlflow.registered_model, 1)]
    fingerprint = json.loads(Path(client.download_artifacts(champion.run_id, "fingerprint.json")).read_text())
    assert pins[model_pin_id(cfg.mlflow.registered_model, 1)].versions == fingerprint_versions(fingerprint)
    assert pins[model_pin_id(cfg.mlflow.registered_model, 1)].versions[FEATURES]

    # Same data, same seed: no improvement, so the second model is only a challenger. No cut-off in the conf:
    # the run's own date (run_after) is the cut-off, as for scheduled and UI-triggered runs.
    dagrun, states = run(dag, "retrain without new data", cutoff=None)
    assert dagrun.state == "success", states
    assert int(client.get_model_version_by_alias(cfg.mlflow.registered_model, "champion").version) == 1
    assert int(client.get_model_version_by_alias(cfg.mlflow.registered_model, "challenger").version) == 2

    with postgres.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT alias, version, reason, decision FROM loopline.model_alias_history ORDER BY id")
        rows = cur.fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("champion", 1, "first model"),
        ("challenger", 2, "retrain without new data"),
    ]
    assert "below the required" in rows[1][3]

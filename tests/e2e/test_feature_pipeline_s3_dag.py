"""feature_pipeline executed by Airflow with both inputs on S3 (the session's S3-compatible server): the export
marker sensor, the copy into the landing drop, then the same ingest, gates and features as a landing drop.

In e2e with the other in-process DAG runs: a Spark task run by dag.test() stops this process's active Spark
session, which the Spark-level tests share."""

from __future__ import annotations

import pytest

from tests.integration import test_s3_source as s3_source
from tests.integration.test_s3_source import DS, _bytes

s3_export = s3_source.export  # the generated export day, as this module's fixture `s3_export`

pytestmark = pytest.mark.e2e


def test_feature_pipeline_ingests_a_day_from_s3_sources(
    s3_export, spark_connect_url, airflow_db, postgres, tmp_path, monkeypatch
):
    """feature_pipeline executed by Airflow with both inputs on S3: the export marker sensor, the copy into
    the landing drop, then the same ingest, gates and features as a landing drop."""
    import json

    from airflow.dag_processing.dagbag import DagBag

    from loopline import lake as tables
    from loopline.config import get_config
    from loopline.lake import Lake
    from tests.conftest import REPO, run_day

    bucket, files, _client = s3_export
    for kind in ("transactions", "labels"):
        monkeypatch.setenv(
            f"LOOPLINE__SOURCES__{kind.upper()}", f"{{kind: s3, prefix: 's3://{bucket}/exports/{kind}/date={{ds}}'}}"
        )
    for name, value in {
        "LOOPLINE__STORAGE__LANDING_URI": str(tmp_path / "landing"),
        "LOOPLINE__STORAGE__LAKE_URI": str(tmp_path / "lake"),
        "LOOPLINE__VALIDATION__SENSOR_MODE": "reschedule",
        "LOOPLINE__VALIDATION__SENSOR_TIMEOUT_SECONDS": "6",
        "LOOPLINE__VALIDATION__SENSOR_POKE_SECONDS": "1",
        "AIRFLOW_CONN_LOOPLINE_LANDING_FS": json.dumps({"conn_type": "fs", "extra": {"path": ""}}),
    }.items():
        monkeypatch.setenv(name, value)
    get_config.cache_clear()
    try:
        dag = DagBag(dag_folder=str(REPO / "dags" / "feature_pipeline.py")).dags["feature_pipeline"]
        dagrun, states = run_day(dag, DS)
    finally:
        get_config.cache_clear()
    assert dagrun.state == "success", states
    assert states["wait_for_s3_export"] == states["extract_sources"] == "success"
    assert "wait_for_drop" not in states  # no landing input left to wait for
    assert _bytes(tmp_path / "landing" / "transactions" / f"ds={DS}") == _bytes(files / "transactions" / f"ds={DS}")
    lake = Lake(str(tmp_path / "lake"))
    assert lake.stats(tables.FEATURES, DS) == {"rows": 200}

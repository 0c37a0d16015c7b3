"""An S3 source (a prefix per day on the session's S3-compatible server) is copied into the day's landing
drop byte for byte, replacing it whole; an export without its marker names the prefix and the day."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest

from loopline.config import S3Source
from loopline.landing import Landing
from loopline.sources import SourceError, copy_s3_day
from loopline.synth import generate

pytestmark = pytest.mark.integration

DS = dt.date(2026, 1, 2)


@pytest.fixture
def export(s3, tmp_path):
    """A generated day uploaded as an export: s3://<bucket>/exports/<kind>/date=<ds>/ with _SUCCESS."""
    files = tmp_path / "files"
    generate(DS, 1, files, transactions_per_day=200, seed=5, compress=True)
    bucket = f"src-{uuid.uuid4().hex[:8]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    for kind in ("transactions", "labels"):
        for path in (files / kind / f"ds={DS}").iterdir():
            client.upload_file(str(path), bucket, f"exports/{kind}/date={DS}/{path.name}")
    return bucket, files, client


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith("_")}


def test_an_s3_export_becomes_the_same_landing_drop(export, tmp_path):
    bucket, files, client = export
    landing = tmp_path / "landing"
    for kind in ("transactions", "labels"):
        source = S3Source(kind="s3", prefix=f"s3://{bucket}/exports/{kind}/date={{ds}}")
        copied = copy_s3_day(source, kind, DS, str(landing))
        assert _bytes(Path(copied.folder)) == _bytes(files / kind / f"ds={DS}")
        assert Landing(str(landing)).is_complete(kind, str(DS))
    # Re-copying replaces the day whole: an object removed upstream disappears from the drop.
    client.put_object(Bucket=bucket, Key=f"exports/transactions/date={DS}/part-extra.csv", Body=b"x")
    source = S3Source(kind="s3", prefix=f"s3://{bucket}/exports/transactions/date={{ds}}")
    assert "part-extra.csv" in copy_s3_day(source, "transactions", DS, str(landing)).files
    client.delete_object(Bucket=bucket, Key=f"exports/transactions/date={DS}/part-extra.csv")
    again = copy_s3_day(source, "transactions", DS, str(landing))
    assert "part-extra.csv" not in again.files
    assert not (landing / "transactions" / f"ds={DS}" / "part-extra.csv").exists()
    assert not [p for p in (landing / "transactions").iterdir() if p.name.startswith(".")]


def test_an_incomplete_export_names_the_prefix_and_day_and_keeps_the_drop(export, tmp_path):
    bucket, _files, client = export
    landing = tmp_path / "landing"
    source = S3Source(kind="s3", prefix=f"s3://{bucket}/exports/labels/date={{ds}}")
    before = _bytes(Path(copy_s3_day(source, "labels", DS, str(landing)).folder))
    client.delete_object(Bucket=bucket, Key=f"exports/labels/date={DS}/_SUCCESS")
    with pytest.raises(SourceError, match=rf"s3://{bucket}/exports/labels/date={DS} \(labels, ds={DS}\): no _SUCCESS"):
        copy_s3_day(source, "labels", DS, str(landing))
    assert _bytes(landing / "labels" / f"ds={DS}") == before
    assert Landing(str(landing)).is_complete("labels", str(DS))


def test_feature_pipeline_ingests_a_day_from_s3_sources(export, spark_connect_url, airflow_db, tmp_path, monkeypatch):
    """feature_pipeline executed by Airflow with both inputs on S3: the export marker sensor, the copy into
    the landing drop, then the same ingest, gates and features as a landing drop."""
    import json

    from airflow.dag_processing.dagbag import DagBag

    from loopline import lake as tables
    from loopline.config import get_config
    from loopline.lake import Lake
    from tests.conftest import REPO, run_day

    bucket, files, _client = export
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

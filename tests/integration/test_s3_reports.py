"""Reports in object storage: ``storage.reports_uri: s3://…`` on the session's S3-compatible server (moto).

A gate renders its Data Docs into a scratch folder and the day's site is uploaded through the amazon
provider's S3Hook; the recorded ``report_uri`` is the object, its link maps under ``storage.reports_url``, and
the Loopline plugin's app serves it from the bucket (index for folders, 404 for missing keys, nothing
outside the prefix). The drift report's folder takes the same path.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from loopline.config import get_config, loopline_home
from tests.conftest import REPO

pytestmark = pytest.mark.integration

BUCKET = "loopline-reports-it"
PREFIX = "reports"
DS = "2026-03-01"
PARAMS = {"max_quarantine_rate": 0.05, "min_rows": 1}


@pytest.fixture
def bucket(s3) -> Iterator[object]:
    """``storage.reports_uri`` in the bucket for the test; the config cache is fresh before and after."""
    client = s3.client()
    if BUCKET not in {item["Name"] for item in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=BUCKET)
    os.environ["LOOPLINE__STORAGE__REPORTS_URI"] = f"s3://{BUCKET}/{PREFIX}"
    get_config.cache_clear()
    yield client
    os.environ.pop("LOOPLINE__STORAGE__REPORTS_URI", None)
    get_config.cache_clear()


def _keys(client, prefix: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def _stats(read: int, quarantined: int) -> pd.DataFrame:
    row = {"rows_read": read, "rows_written": read - quarantined, "rows_quarantined": quarantined}
    return pd.DataFrame([{**row, "quarantine_rate": quarantined / read}])


def _plugin():
    """The plugin module, loaded from ``plugins/`` as Airflow's plugin manager would."""
    spec = importlib.util.spec_from_file_location("loopline_plugin_it", REPO / "plugins" / "loopline_plugin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def login(airflow_db) -> str:
    """A bearer token of the API server's auth manager, as the UI's login leaves in its session cookie."""
    from airflow.api_fastapi.app import init_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return init_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))


def _served(token: str | None):
    """The reports app mounted where the API server mounts it, in a test client logged in with ``token``."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    plugin = _plugin()
    api = FastAPI()
    api.mount(plugin.REPORTS_PREFIX, plugin.reports_app())
    return TestClient(api, cookies={"_token": token} if token else None)


def test_a_gate_leaves_its_data_docs_in_the_bucket_and_the_plugin_serves_them(bucket, login):
    from loopline.orchestration import links
    from loopline.orchestration.feature_tasks import _gate

    result = _gate(_stats(1000, 10), "ingest_stats", ds=DS, params=PARAMS)

    day = f"{PREFIX}/gx/ingest_stats/ds={DS}/"
    assert result.success
    assert result.report_uri.startswith(f"s3://{BUCKET}/{day}validations/")
    page_key = result.report_uri.removeprefix(f"s3://{BUCKET}/")
    keys = _keys(bucket, day)
    assert {f"{day}index.html", page_key} <= keys
    assert bucket.head_object(Bucket=BUCKET, Key=f"{day}index.html")["ContentType"] == "text/html"
    assert not (loopline_home() / "reports" / "gx" / "ingest_stats" / f"ds={DS}").exists()  # scratch only

    url = links.report_url(result.report_uri)
    assert url == f"/loopline/reports/{page_key.removeprefix(PREFIX + '/')}"
    with _served(login) as client:
        page = client.get(url)
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        assert page.content == bucket.get_object(Bucket=BUCKET, Key=page_key)["Body"].read()

        index = client.get(f"/loopline/reports/gx/ingest_stats/ds={DS}/")
        assert index.status_code == 200
        assert index.content == bucket.get_object(Bucket=BUCKET, Key=f"{day}index.html")["Body"].read()
        folder = client.get(f"/loopline/reports/gx/ingest_stats/ds={DS}", follow_redirects=False)
        assert (folder.status_code, folder.headers["location"]) == (307, f"ds={DS}/")

        assert client.get("/loopline/reports/gx/ingest_stats/ds=1999-01-01/index.html").status_code == 404
        # S3 keys are literal: a key spelled with ".." exists only if written so, and the app never asks for one.
        dotted = f"{PREFIX}/gx/../outside.txt"
        bucket.put_object(Bucket=BUCKET, Key=dotted, Body=b"not a report")
        assert bucket.get_object(Bucket=BUCKET, Key=dotted)["Body"].read() == b"not a report"
        assert client.get("/loopline/reports/gx/%2E%2E/outside.txt").status_code == 404
        assert client.get("/loopline/reports/%2E%2E/%2E%2E/outside.txt").status_code == 404


def test_a_failing_gate_uploads_its_report_and_names_the_object(bucket):
    from loopline.orchestration.feature_tasks import _gate
    from loopline.validation import GateFailed

    ds = "2026-03-02"
    with pytest.raises(GateFailed) as caught:
        _gate(_stats(1000, 80), "ingest_stats", ds=ds, params=PARAMS)
    uri = caught.value.result.report_uri
    assert uri.startswith(f"s3://{BUCKET}/{PREFIX}/gx/ingest_stats/ds={ds}/")
    assert f"Validation report: {uri}" in str(caught.value)
    assert uri.removeprefix(f"s3://{BUCKET}/") in _keys(bucket, f"{PREFIX}/gx/ingest_stats/ds={ds}/")


def test_a_rerun_replaces_only_its_own_day(bucket):
    from loopline.orchestration.feature_tasks import _gate

    ds, other = "2026-03-03", "2026-03-04"
    stale = f"{PREFIX}/gx/ingest_stats/ds={ds}/validations/ingest_stats/old-run.html"
    kept = f"{PREFIX}/gx/ingest_stats/ds={other}/index.html"
    for key in (stale, kept):
        bucket.put_object(Bucket=BUCKET, Key=key, Body=b"<html>earlier</html>")

    _gate(_stats(1000, 10), "ingest_stats", ds=ds, params=PARAMS)
    keys = _keys(bucket, f"{PREFIX}/gx/ingest_stats/")
    assert stale not in keys  # an earlier render's page of the same day
    assert f"{PREFIX}/gx/ingest_stats/ds={ds}/index.html" in keys
    assert kept in keys  # another day is not this gate's business


def test_the_drift_report_folder_is_uploaded_and_linked(bucket, login):
    from loopline import monitoring
    from loopline.drift import DriftResult, DriftTest
    from loopline.orchestration import links, reports
    from loopline.training.synthetic import synthetic_day

    day = dt.date.fromisoformat(DS)
    reference, p = synthetic_day(day, 400, 1)
    current, q = synthetic_day(day, 400, 2)
    tests = (DriftTest("amount_eur", "ks", 0.2, 1e-6, 0.01, True), DriftTest("hour", "ks", 0.01, 0.6, 0.01, False))
    result = DriftResult("scipy", tests, ("amount_eur",), None, None, 1, 2, False, 400, 400, 0.05, "bonferroni")

    with reports.report_space() as space:  # what detect_drift does with it
        folder = space.root / "drift" / f"ds={DS}"
        rendered = monitoring.render_report(
            result, reference.assign(score=p), current.assign(score=q), folder, title="drift", top=2
        )
        uploaded = space.publish(folder)
        uri = space.stored_uri(rendered)
        scratch = space.root
    assert not scratch.exists()

    day_prefix = f"{PREFIX}/drift/ds={DS}/"
    keys = _keys(bucket, day_prefix)
    assert uploaded == len(keys) >= 3
    assert {f"{day_prefix}report.html", f"{day_prefix}pvalues.png", f"{day_prefix}feature_amount_eur.png"} <= keys
    assert bucket.head_object(Bucket=BUCKET, Key=f"{day_prefix}pvalues.png")["ContentType"] == "image/png"
    assert uri == f"s3://{BUCKET}/{day_prefix}report.html"
    assert links.report_url(uri) == f"/loopline/reports/drift/ds={DS}/report.html"
    with _served(login) as client:
        image = client.get(f"/loopline/reports/drift/ds={DS}/pvalues.png")
        assert (image.status_code, image.headers["content-type"]) == (200, "image/png")
        assert image.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_only_one_report_folder_is_published_at_a_time(bucket):
    from loopline.orchestration import reports

    with reports.report_space() as space, pytest.raises(ValueError, match="not the whole reports folder"):
        space.publish(space.root)


def test_a_local_reports_folder_is_still_served_as_files(tmp_path, login):
    os.environ["LOOPLINE__STORAGE__REPORTS_URI"] = str(tmp_path / "reports")
    get_config.cache_clear()
    try:
        page = Path(tmp_path / "reports" / "drift" / f"ds={DS}" / "report.html")
        page.parent.mkdir(parents=True)
        page.write_text("<html>drift</html>")
        with _served(login) as client:
            assert client.get(f"/loopline/reports/drift/ds={DS}/report.html").text == "<html>drift</html>"
            assert client.get("/loopline/reports/drift/ds=1999-01-01/report.html").status_code == 404
    finally:
        os.environ.pop("LOOPLINE__STORAGE__REPORTS_URI", None)
        get_config.cache_clear()


@pytest.mark.parametrize("where", ["bucket", "folder"])
def test_reports_are_refused_without_the_api_servers_login(where, bucket, tmp_path, login):
    """Anonymous: 401; a forged token: 403; climbing out of the reports root: 404, logged in or not."""
    if where == "folder":
        os.environ["LOOPLINE__STORAGE__REPORTS_URI"] = str(tmp_path / "reports")
        get_config.cache_clear()
        (tmp_path / "reports" / "drift").mkdir(parents=True)
        (tmp_path / "reports" / "drift" / "report.html").write_text("<html>drift</html>")
        (tmp_path / "secret.txt").write_text("outside the reports folder")
    else:
        bucket.put_object(Bucket=BUCKET, Key=f"{PREFIX}/drift/report.html", Body=b"<html>drift</html>")
    with _served(None) as client:
        assert client.get("/loopline/reports/drift/report.html").status_code == 401
    with _served("not-a-token") as client:
        assert client.get("/loopline/reports/drift/report.html").status_code == 403
    with _served(login) as client:
        assert client.get("/loopline/reports/drift/report.html").text == "<html>drift</html>"
        if where == "folder":
            assert client.get("/loopline/reports/drift", follow_redirects=False).status_code == 307
        assert client.get("/loopline/reports/drift/%2E%2E/%2E%2E/secret.txt").status_code == 404

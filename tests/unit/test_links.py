"""Extra links: URLs derived from task results, and report paths mapped to where browsers find them."""

from __future__ import annotations

import os

import pytest

from loopline.config import get_config, resolve_uri
from loopline.orchestration.links import mlflow_url, report_url


@pytest.fixture(autouse=True)
def fresh_config():
    get_config.cache_clear()
    yield
    os.environ.pop("LOOPLINE__STORAGE__REPORTS_URL", None)
    get_config.cache_clear()


def test_mlflow_urls_for_runs_versions_and_scores():
    ui = get_config().mlflow.ui_url.rstrip("/")
    assert mlflow_url({"run_id": "abc", "experiment_id": "3"}) == f"{ui}/#/experiments/3/runs/abc"
    assert mlflow_url({"alias": "champion", "version": 7, "run_id": "abc"}) == (
        f"{ui}/#/models/{get_config().mlflow.registered_model}/versions/7"
    )
    assert mlflow_url({"model": {"name": "fraud x", "version": 2}}) == f"{ui}/#/models/fraud%20x/versions/2"
    assert mlflow_url({"mlflow_run_url": "http://m/#/r"}) == "http://m/#/r"
    assert mlflow_url({"rows": 3}) is None
    assert mlflow_url(None) is None


def test_reports_map_under_the_reports_url():
    root = resolve_uri(get_config().storage.reports_uri)
    assert report_url(f"file://{root}/gx/features/ds=2026-01-02/index.html") == (
        "/loopline/reports/gx/features/ds=2026-01-02/index.html"
    )
    os.environ["LOOPLINE__STORAGE__REPORTS_URL"] = "https://reports.example.org/loopline/"
    get_config.cache_clear()
    assert report_url(f"{root}/drift/ds=2026-01-02/report.html").startswith(
        "https://reports.example.org/loopline/drift/"
    )
    assert report_url("s3://bucket/reports/x.html") == "s3://bucket/reports/x.html"
    assert report_url(None) is None

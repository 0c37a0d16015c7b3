"""Loopline's Airflow plugin: the operator extra links, and the rendered reports served next to the UI.

- Extra links (``loopline.orchestration.links``): "MLflow" on training, gating, scoring and drift tasks,
  "Validation report" on the Great Expectations gates and the drift report.
- ``/loopline/reports``: the local ``storage.reports_uri`` folder (Data Docs, drift reports) as static files
  on the API server, so the links open in the browser (``storage.reports_url`` points here). In production,
  point ``reports_url`` at the web front of the reports bucket instead; this mount then serves nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from loopline.config import get_config, resolve_uri
from loopline.orchestration.links import MlflowLink, ValidationReportLink

REPORTS_PREFIX = "/loopline/reports"


def reports_app() -> FastAPI:
    app = FastAPI(title="Loopline reports")
    reports = resolve_uri(get_config().storage.reports_uri)
    if "://" not in reports:  # object storage is served by its own front
        Path(reports).mkdir(parents=True, exist_ok=True)
        app.mount("/", StaticFiles(directory=reports, html=True), name="reports")
    return app


class LooplinePlugin(AirflowPlugin):
    name = "loopline"
    operator_extra_links: ClassVar[list[Any]] = [MlflowLink(), ValidationReportLink()]
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": reports_app(), "url_prefix": REPORTS_PREFIX, "name": "Loopline reports"}
    ]

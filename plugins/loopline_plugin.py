"""Loopline's Airflow plugin: the operator extra links, and the rendered reports served next to the UI.

- Extra links (``loopline.orchestration.links``): "MLflow" on training, gating, scoring and drift tasks,
  "Validation report" on the Great Expectations gates and the drift report.
- ``/loopline/reports``: what ``storage.reports_uri`` holds (Data Docs, drift reports), so the links open in
  the browser (``storage.reports_url`` points here). A local folder is served as static files; an object-store
  one (``s3://bucket/prefix``) object by object through the amazon provider's ``S3Hook`` (connection
  ``storage.aws_conn_id``), so browsers need no credentials of the bucket. Or point ``reports_url`` at a web
  front of the bucket, and this mount goes unused.

Importing the plugin reads the config and nothing else: the object store is reached only per request.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, HTTPException
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.background import BackgroundTask

from loopline.config import get_config, resolve_uri
from loopline.orchestration.links import MlflowLink, ValidationReportLink
from loopline.orchestration.reports import is_object_store, read_object

REPORTS_PREFIX = "/loopline/reports"
INDEX = "index.html"
_CHUNK = 256 * 1024


def _object_app(app: FastAPI, reports_uri: str, conn_id: str) -> None:
    """Serve ``reports_uri`` (object storage) at the app's root: ``index.html`` for folders, 404 when missing."""

    def _missing(path: str) -> HTTPException:
        return HTTPException(status_code=404, detail=f"no report at {path or '/'}")

    @app.get("/{path:path}", include_in_schema=False)
    def serve(path: str) -> Response:  # sync: FastAPI runs it (and S3's blocking reads) in its thread pool
        parts = [part for part in path.split("/") if part]
        if any(part in (".", "..") or "\\" in part for part in parts):
            raise _missing(path)  # never a key outside the reports prefix
        relative = "/".join(parts)
        folder = not relative or path.endswith("/")
        if folder:
            relative = f"{relative}/{INDEX}".lstrip("/")
        found = read_object(reports_uri, relative, conn_id)
        # A folder named without its slash: redirect, so the page's relative links resolve inside it.
        if found is None and not folder and read_object(reports_uri, f"{relative}/{INDEX}", conn_id) is not None:
            return RedirectResponse(f"{parts[-1]}/", status_code=307)
        if found is None:
            raise _missing(path)
        fetched = found.get()  # its own length and type: a rerun may have replaced the object since the lookup
        body = fetched["Body"]
        media_type = mimetypes.guess_type(relative)[0] or fetched.get("ContentType") or "application/octet-stream"
        return StreamingResponse(
            body.iter_chunks(_CHUNK),
            media_type=media_type,
            headers={"Content-Length": str(fetched["ContentLength"])},
            background=BackgroundTask(body.close),  # the connection goes back to the pool, read to the end or not
        )


def reports_app() -> FastAPI:
    """The app mounted at :data:`REPORTS_PREFIX`: static files of a local ``reports_uri``, or its S3 objects."""
    app = FastAPI(title="Loopline reports")
    storage = get_config().storage
    reports = resolve_uri(storage.reports_uri)
    if is_object_store(reports):
        _object_app(app, reports, storage.aws_conn_id)
    elif "://" not in reports or reports.startswith("file://"):
        folder = Path(reports.removeprefix("file://"))
        folder.mkdir(parents=True, exist_ok=True)
        app.mount("/", StaticFiles(directory=folder, html=True), name="reports")
    return app


class LooplinePlugin(AirflowPlugin):
    name = "loopline"
    operator_extra_links: ClassVar[list[Any]] = [MlflowLink(), ValidationReportLink()]
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": reports_app(), "url_prefix": REPORTS_PREFIX, "name": "Loopline reports"}
    ]

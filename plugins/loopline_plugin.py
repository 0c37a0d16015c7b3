"""Loopline's Airflow plugin: the operator extra links, and the rendered reports served next to the UI.

- Extra links (``loopline.orchestration.links``): "MLflow" on training, gating, scoring and drift tasks,
  "Validation report" on the Great Expectations gates and the drift report.
- ``/loopline/reports``: what ``storage.reports_uri`` holds (Data Docs, drift reports), so the links open in
  the browser (``storage.reports_url`` points here). A local folder is served file by file; an object-store
  one (``s3://bucket/prefix``) object by object through the amazon provider's ``S3Hook`` (connection
  ``storage.aws_conn_id``), so browsers need no credentials of the bucket. Or point ``reports_url`` at a web
  front of the bucket, and this mount goes unused. Every request needs the API server's own login (the UI's
  session cookie or a bearer token); an anonymous one gets 401, an invalid token 403.

- ``/loopline/health/``: the model-health page (``loopline.health``): realized performance, slices, drift,
  ingest, volumes, score distribution, champion history and the shadow's promotion evidence over time, read
  per request from the analyst tables with the analyst role (connection ``postgres.analyst_conn_id``), charts
  drawn with the plotly.js of the ``plotly`` package served at ``/loopline/health/plotly.min.js`` (no CDN).
  Same login as the reports; the "Model health" extra link of each DAG opens it.

Importing the plugin reads the config and nothing else: the object store and Postgres are reached only per request.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from loopline.config import get_config, resolve_uri
from loopline.health import HEALTH_PREFIX, PLOTLY_JS
from loopline.orchestration.links import HealthPageLink, MlflowLink, ModelCardLink, ValidationReportLink
from loopline.orchestration.reports import is_object_store, read_object

REPORTS_PREFIX = "/loopline/reports"
INDEX = "index.html"
_CHUNK = 256 * 1024


def _missing(path: str) -> HTTPException:
    return HTTPException(status_code=404, detail=f"no report at {path or '/'}")


def _parts(path: str) -> list[str]:
    """The request path's segments; one that could climb out of the reports root is a 404."""
    parts = [part for part in path.split("/") if part]
    if any(part in (".", "..") or "\\" in part for part in parts):
        raise _missing(path)
    return parts


def _folder_app(app: FastAPI, folder: Path) -> None:
    """Serve the local ``folder`` at the app's root: ``index.html`` for folders, 404 when missing."""
    root = folder.resolve()

    @app.get("/{path:path}", include_in_schema=False)
    def serve(path: str) -> Response:
        parts = _parts(path)
        target = root.joinpath(*parts).resolve()
        if not target.is_relative_to(root):
            raise _missing(path)  # a link inside the folder pointing out of it
        if target.is_dir():
            if parts and not path.endswith("/"):
                return RedirectResponse(f"{parts[-1]}/", status_code=307)
            target = target / INDEX
        if not target.is_file():
            raise _missing(path)
        return FileResponse(target, media_type=mimetypes.guess_type(target.name)[0])


def _object_app(app: FastAPI, reports_uri: str, conn_id: str) -> None:
    """Serve ``reports_uri`` (object storage) at the app's root: ``index.html`` for folders, 404 when missing."""

    @app.get("/{path:path}", include_in_schema=False)
    def serve(path: str) -> Response:  # sync: FastAPI runs it (and S3's blocking reads) in its thread pool
        parts = _parts(path)  # never a key outside the reports prefix
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
    """The app mounted at :data:`REPORTS_PREFIX`: the files of a local ``reports_uri``, or its S3 objects, to
    whoever the API server's auth manager lets see the website."""
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import requires_access_view

    app = FastAPI(title="Loopline reports", dependencies=[Depends(requires_access_view(AccessView.WEBSITE))])
    storage = get_config().storage
    reports = resolve_uri(storage.reports_uri)
    if is_object_store(reports):
        _object_app(app, reports, storage.aws_conn_id)
    elif "://" not in reports or reports.startswith("file://"):
        folder = Path(reports.removeprefix("file://"))
        folder.mkdir(parents=True, exist_ok=True)
        _folder_app(app, folder)
    return app


def _login_required() -> list[Any]:
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import requires_access_view

    return [Depends(requires_access_view(AccessView.WEBSITE))]


def health_app() -> FastAPI:
    """The app mounted at ``HEALTH_PREFIX``: the model-health page and the plotly.js it loads."""
    app = FastAPI(title="Loopline model health", dependencies=_login_required())

    @app.get("/", include_in_schema=False)
    def page(days: int = 90) -> HTMLResponse:  # sync: the queries block, FastAPI runs it in its thread pool
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from loopline import health

        cfg = get_config().postgres
        try:
            conn = PostgresHook(postgres_conn_id=cfg.analyst_conn_id).get_conn()
        except Exception as exc:  # no connection configured, or the database is down: say which and why
            raise HTTPException(
                status_code=503,
                detail=f"cannot reach the analyst tables through connection {cfg.analyst_conn_id!r}: {exc}",
            ) from exc
        try:
            with conn.cursor() as cur:  # psycopg 2 or 3, whichever the provider uses: plain SQL
                cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            data = health.gather(conn, cfg.schema_, days=max(1, min(days, 3660)))
        finally:
            conn.close()
        return HTMLResponse(health.render(data))

    @app.get(f"/{PLOTLY_JS}", include_in_schema=False)
    def plotly_js() -> Response:
        from loopline import health

        return Response(
            health.plotly_js(), media_type="text/javascript", headers={"Cache-Control": "private, max-age=86400"}
        )

    return app


class LooplinePlugin(AirflowPlugin):
    name = "loopline"
    operator_extra_links: ClassVar[list[Any]] = [
        MlflowLink(),
        ValidationReportLink(),
        ModelCardLink(),
        HealthPageLink(),
    ]
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": reports_app(), "url_prefix": REPORTS_PREFIX, "name": "Loopline reports"},
        {"app": health_app(), "url_prefix": HEALTH_PREFIX, "name": "Loopline model health"},
    ]

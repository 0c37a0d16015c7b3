"""Operator extra links: from a task instance to its MLflow run / model version and its validation report.

Airflow 3 computes an operator's links in the worker when the task ends and keeps them in XCom; the UI
reads them from there. A task records its URL under :data:`MLFLOW_KEY` or :data:`REPORT_KEY` with
:func:`record` (a failing gate records its report before it raises, so the link is there when it matters
most); for tasks that only return a result, :class:`MlflowLink` derives the URL from the returned run id /
model version. :func:`attach` puts links on a DAG's task; the plugin in ``plugins/`` registers the classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

from loopline.config import get_config, resolve_uri

MLFLOW_KEY = "loopline_mlflow_url"
REPORT_KEY = "loopline_report_url"
CARD_KEY = "loopline_model_card_url"


def mlflow_url(value: Any) -> str | None:
    """The MLflow UI URL for a task result: a run URL, a model version, or a run id + experiment id."""
    if not isinstance(value, dict):
        return None
    ui = get_config().mlflow.ui_url.rstrip("/")
    if value.get("mlflow_run_url"):
        return str(value["mlflow_run_url"])
    model = value.get("model") if isinstance(value.get("model"), dict) else value
    if model.get("version") and (model.get("name") or model.get("alias")):
        name = model.get("name") or get_config().mlflow.registered_model
        return f"{ui}/#/models/{quote(str(name))}/versions/{model['version']}"
    if value.get("run_id") and value.get("experiment_id"):
        return f"{ui}/#/experiments/{value['experiment_id']}/runs/{value['run_id']}"
    return None


def report_url(uri: str | None) -> str | None:
    """The browser URL of a report under ``storage.reports_uri``, via ``storage.reports_url``.

    ``uri`` is a path or ``file://`` URL under a local reports folder, or an ``s3://`` object under an
    object-store one; anything else (another bucket, an https URL) is returned as it is.
    """
    if not uri:
        return None
    cfg = get_config().storage
    root = resolve_uri(cfg.reports_uri)
    if "://" in root and not root.startswith("file://"):  # object storage: the key below the prefix
        prefix = root.rstrip("/") + "/"
        if not uri.startswith(prefix):
            return uri
        relative = uri.removeprefix(prefix)
    else:
        path = Path(uri.removeprefix("file://"))
        try:
            relative = path.resolve().relative_to(Path(root.removeprefix("file://")).resolve()).as_posix()
        except ValueError:
            return uri  # not under the reports folder (e.g. already an s3/https URL): as it is
    return f"{cfg.reports_url.rstrip('/')}/{quote(relative, safe='/=')}"


def record(key: str, url: str | None) -> None:
    """Keep ``url`` for this task instance's link ``key`` (call inside a running task)."""
    if not url:
        return
    from airflow.sdk import get_current_context

    get_current_context()["ti"].xcom_push(key=key, value=url)


def _get(ti_key: Any, key: str) -> Any:
    from airflow.sdk.bases.xcom import BaseXCom

    return BaseXCom.get_value(ti_key=ti_key, key=key)


class MlflowLink(BaseOperatorLink):
    """ "MLflow": the task's MLflow run or registered model version."""

    name = "MLflow"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return _get(ti_key, MLFLOW_KEY) or mlflow_url(_get(ti_key, "return_value")) or ""


class ValidationReportLink(BaseOperatorLink):
    """ "Validation report": the rendered Great Expectations Data Docs page of the task's gate."""

    name = "Validation report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return _get(ti_key, REPORT_KEY) or ""


class ModelCardLink(BaseOperatorLink):
    """ "Model card": the gated version's model card (``model_card.md`` on its MLflow run)."""

    name = "Model card"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return _get(ti_key, CARD_KEY) or ""


class HealthPageLink(BaseOperatorLink):
    """ "Model health": the model-health page served beside the UI (the loop over time, every DAG's view)."""

    name = "Model health"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from loopline.health import HEALTH_PREFIX

        return f"{HEALTH_PREFIX}/"


def attach(task: Any, *links: BaseOperatorLink) -> Any:
    """Add ``links`` to a task (an operator or a TaskFlow call's XComArg); returns ``task``."""
    operator = getattr(task, "operator", task)
    operator.operator_extra_links = (*operator.operator_extra_links, *links)
    return task

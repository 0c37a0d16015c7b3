"""How tasks reach MLflow: the ``loopline_mlflow`` connection when it exists, the configured URI otherwise.

The server side (basic auth refusing anonymous calls, a run logged and read back, the local trainer) is in
``tests/integration/test_mlflow_auth.py``; here: URL building, the fallback, and where credentials may go.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator

import pytest

from loopline.config import get_config, load_config, resolve_uri
from loopline.orchestration.mlflow_access import configure_mlflow, connection_url, mlflow_access

CONN_VAR = "AIRFLOW_CONN_LOOPLINE_MLFLOW"
MLFLOW_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
PASSWORD = secrets.token_urlsafe(18)  # a fresh value: none in the repository


@pytest.fixture(autouse=True)
def clean_env() -> Iterator[None]:
    """No MLflow settings from outside; whatever the helper sets in this process is undone afterwards."""
    saved = {name: os.environ.pop(name, None) for name in (*MLFLOW_VARS, CONN_VAR)}
    get_config.cache_clear()
    yield
    for name, value in saved.items():
        os.environ.pop(name, None)
        if value is not None:
            os.environ[name] = value
    get_config.cache_clear()


def _connection(**fields) -> str:
    return json.dumps({"conn_type": "http", "host": "mlflow.internal", "port": 5000, "schema": "http", **fields})


@pytest.mark.parametrize(
    ("host", "port", "schema", "expected"),
    [
        ("127.0.0.1", 5000, "http", "http://127.0.0.1:5000"),
        ("mlflow.example.org", None, "https", "https://mlflow.example.org"),
        ("mlflow.example.org", 8443, "HTTPS", "https://mlflow.example.org:8443"),
        ("mlflow.internal", None, None, "http://mlflow.internal"),
        ("https://mlflow.example.org/tracking/", None, "", "https://mlflow.example.org/tracking"),
        ("http://mlflow.internal:5001", 5000, "http", "http://mlflow.internal:5001"),  # the host's own port wins
        ("http://user:pw@mlflow.internal", 5000, None, "http://mlflow.internal:5000"),  # pragma: allowlist secret
    ],
)
def test_the_connection_url(host, port, schema, expected):
    assert connection_url("loopline_mlflow", host, port, schema) == expected


@pytest.mark.parametrize(
    ("host", "schema", "message"),
    [("", "http", "has no host"), ("mlflow.internal", "postgres", "must be http or https")],
)
def test_a_connection_that_names_no_server_is_refused_naming_it(host, schema, message):
    with pytest.raises(ValueError, match=f"'loopline_mlflow'.*{message}"):
        connection_url("loopline_mlflow", host, None, schema)


def test_without_the_connection_nothing_changes():
    assert configure_mlflow() == resolve_uri(get_config().mlflow.tracking_uri)
    assert not any(name in os.environ for name in MLFLOW_VARS)
    os.environ["MLFLOW_TRACKING_URI"] = "http://127.0.0.1:5999"
    access = mlflow_access()
    assert (access.tracking_uri, access.conn_id, access.username) == ("http://127.0.0.1:5999", None, None)
    assert access.env() == {}


def test_the_connection_replaces_the_uri_and_any_stale_user():
    os.environ[CONN_VAR] = _connection(login="loopline", password=PASSWORD)
    os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///elsewhere.db"
    os.environ["MLFLOW_TRACKING_USERNAME"] = "someone-else"
    assert configure_mlflow() == "http://mlflow.internal:5000"
    assert {name: os.environ[name] for name in MLFLOW_VARS} == {
        "MLFLOW_TRACKING_URI": "http://mlflow.internal:5000",
        "MLFLOW_TRACKING_USERNAME": "loopline",
        "MLFLOW_TRACKING_PASSWORD": PASSWORD,
    }
    access = mlflow_access()
    assert PASSWORD not in repr(access) + access.describe()


def test_a_connection_without_login_is_anonymous():
    os.environ[CONN_VAR] = _connection()
    os.environ["MLFLOW_TRACKING_PASSWORD"] = secrets.token_hex(8)  # left over from elsewhere
    assert configure_mlflow() == "http://mlflow.internal:5000"
    assert "MLFLOW_TRACKING_USERNAME" not in os.environ
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ


def test_another_conn_id_is_configuration():
    os.environ["AIRFLOW_CONN_TEAM_MLFLOW"] = _connection(host="team.mlflow", login="team", password=PASSWORD)
    try:
        cfg = load_config(environ={"LOOPLINE__MLFLOW__CONN_ID": "team_mlflow"})
        assert mlflow_access(cfg).tracking_uri == "http://team.mlflow:5000"
        assert mlflow_access().conn_id is None  # loopline_mlflow is not set
    finally:
        os.environ.pop("AIRFLOW_CONN_TEAM_MLFLOW")


def test_the_trainer_pod_never_carries_the_credentials():
    """The kubernetes runner's credentials come from its Kubernetes secret, even when the worker has the connection."""
    from loopline.orchestration import training_tasks

    os.environ[CONN_VAR] = _connection(login="loopline", password=PASSWORD)
    configure_mlflow()  # as a task of the same worker would have
    cfg = load_config(environ={"LOOPLINE__TRAINING__RUNNER": "kubernetes"})
    pod = training_tasks.trainer_pod(cfg).build_pod_request_obj(dry_run=True)
    rendered = json.dumps(pod.to_dict(), default=str)
    assert PASSWORD not in rendered
    assert "MLFLOW_TRACKING_PASSWORD" not in rendered
    assert "MLFLOW_TRACKING_USERNAME" not in rendered

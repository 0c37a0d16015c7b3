"""Tasks against a real MLflow tracking server behind MLflow's basic-auth app, reached through the Airflow
connection ``loopline_mlflow`` (``loopline.orchestration.mlflow_access``).

The server is started once for the module (``mlflow server --app-name basic-auth``, SQLite stores, artifacts
proxied to a folder) with an admin and a ``loopline`` user; anonymous requests are refused. The helper then
logs a run and reads it back, and the local trainer runner's child process trains against it with the
credentials it inherits through its environment, never its command line.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from loopline.config import get_config
from tests.conftest import BIN, free_port

pytestmark = pytest.mark.integration

USER = "loopline"
CONN_VAR = "AIRFLOW_CONN_LOOPLINE_MLFLOW"
MLFLOW_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
START_SECONDS = 180  # the first start creates both SQLite stores (migrations) on a slow, shared machine


@dataclass(frozen=True)
class AuthServer:
    url: str
    port: int
    admin_password: str
    password: str  # the loopline user's

    def connection(self, password: str | None = None) -> str:
        """``AIRFLOW_CONN_LOOPLINE_MLFLOW`` for the loopline user (type http: host, port, schema, login, password)."""
        return json.dumps(
            {
                "conn_type": "http",
                "host": "127.0.0.1",
                "port": self.port,
                "schema": "http",
                "login": USER,
                "password": password or self.password,
            }
        )


def _request(url: str, *, user: str | None = None, password: str | None = None, body: dict | None = None) -> int:
    """The HTTP status of one request (basic auth when ``user`` is given), within 10 s."""
    headers = {"Content-Type": "application/json"}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - a loopback test server
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _wait_healthy(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if _request(f"{url}/health") == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"mlflow server not healthy after {START_SECONDS} s:\n{log.read_text()[-4000:]}")


def _stop(process: subprocess.Popen) -> None:
    """Stop the server and its workers: its own process group, SIGTERM then SIGKILL after 20 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[AuthServer]:
    root = tmp_path_factory.mktemp("mlflow-auth")
    port = free_port()
    admin_password = secrets.token_urlsafe(18)  # basic auth wants 12+ characters
    auth_ini = root / "auth.ini"
    auth_ini.write_text(
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\n"
        "admin_username = admin\n"
        f"admin_password = {admin_password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env = {name: value for name, value in os.environ.items() if not name.startswith("MLFLOW_")}
    env |= {"MLFLOW_AUTH_CONFIG_PATH": str(auth_ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}
    command = [
        str(BIN / "mlflow"), "server", "--app-name", "basic-auth",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts",
    ]  # fmt: skip
    log = root / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, process, log)
        password = secrets.token_urlsafe(18)
        created = _request(
            f"{url}/api/2.0/mlflow/users/create",
            user="admin",
            password=admin_password,
            body={"username": USER, "password": password},
        )
        assert created == 200, log.read_text()[-3000:]
        yield AuthServer(url=url, port=port, admin_password=admin_password, password=password)
    finally:
        _stop(process)


@pytest.fixture
def clean_env(monkeypatch) -> Iterator[None]:
    """No MLflow settings from outside; whatever the helper sets in this process is undone afterwards."""
    saved = {name: os.environ.get(name) for name in (*MLFLOW_VARS, CONN_VAR)}
    for name in saved:
        monkeypatch.delenv(name, raising=False)
    get_config.cache_clear()
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    get_config.cache_clear()


def test_anonymous_and_wrong_credentials_are_refused(server):
    search = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _request(search) == 401
    assert _request(search, user=USER, password=server.password[::-1]) == 401
    assert _request(search, user=USER, password=server.password) == 200


def test_the_connection_logs_a_run_and_reads_it_back(server, clean_env, tmp_path, capsys, caplog):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from loopline.orchestration.mlflow_access import configure_mlflow, mlflow_access

    os.environ[CONN_VAR] = server.connection()
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'elsewhere.db'}"  # the connection wins
    with caplog.at_level(logging.INFO):
        uri = configure_mlflow()
    logged = "".join(capsys.readouterr()) + caplog.text  # where records go depends on Airflow's logging setup
    assert uri == server.url
    assert os.environ["MLFLOW_TRACKING_URI"] == server.url
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == USER
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == server.password
    access = mlflow_access()
    assert access.describe() == f"{server.url} as {USER} (Airflow connection loopline_mlflow)"
    assert server.password not in logged + repr(access) + access.describe()

    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(f"auth-{secrets.token_hex(4)}")
    run = client.create_run(experiment_id, run_name="through the connection")
    client.log_metric(run.info.run_id, "roc_auc", 0.91)
    note = tmp_path / "note.txt"
    note.write_text("proxied through the tracking server")
    client.log_artifact(run.info.run_id, str(note))  # mlflow-artifacts: the same credentials
    client.set_terminated(run.info.run_id)

    read = MlflowClient(tracking_uri=uri).get_run(run.info.run_id)
    assert read.data.metrics == {"roc_auc": 0.91}
    assert read.info.status == "FINISHED"
    fetched = Path(client.download_artifacts(run.info.run_id, "note.txt", str(tmp_path / "back")))
    assert fetched.read_text() == "proxied through the tracking server"
    assert not (tmp_path / "elsewhere.db").exists()

    # The same calls without the credentials are refused: it was the connection that let them in.
    os.environ.pop("MLFLOW_TRACKING_PASSWORD")
    with pytest.raises(MlflowException, match=r"\b401\b"):
        MlflowClient(tracking_uri=uri).get_run(run.info.run_id)


def test_the_local_trainer_inherits_the_credentials_through_its_environment(server, clean_env, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from loopline.orchestration import training_tasks
    from loopline.training.synthetic import write_synthetic_lake

    start, days = dt.date(2026, 1, 1), 24
    lake = write_synthetic_lake(tmp_path / "lake", start, days, rows_per_day=250, seed=5)
    os.environ[CONN_VAR] = server.connection()
    monkeypatch.setenv("LOOPLINE__DRIFT__REFERENCE_SAMPLE_SIZE", "200")
    monkeypatch.setenv("LOOPLINE__SCORING__THRESHOLD_POLICY__MIN_ALERTS", "1")  # a small lake: few validation rows
    seen: list[tuple[list[str], dict[str, str]]] = []
    real_run = subprocess.run

    def spy(command, *args, **kwargs):
        seen.append((list(command), dict(kwargs.get("env") or {})))
        return real_run(command, *args, timeout=600, **kwargs)

    monkeypatch.setattr(training_tasks.subprocess, "run", spy)
    result = training_tasks.train_local.function(
        [
            "--lake", str(lake.root), "--cutoff", (start + dt.timedelta(days=days)).isoformat(),
            "--model-type", "xgboost", "--window-days", str(days), "--validation-days", "3", "--holdout-days", "4",
            "--label-maturity-days", "3", "--max-rounds", "20", "--reason", "basic auth through the connection",
            "--triggered-by", "test", "--run-name", "auth-trainer__try1",
        ]
    )  # fmt: skip

    (command, env), *_ = seen
    assert server.password not in " ".join(command)  # `ps` shows command lines to every user
    assert "--tracking-uri" not in command
    assert (env["MLFLOW_TRACKING_URI"], env["MLFLOW_TRACKING_USERNAME"]) == (server.url, USER)
    assert env["MLFLOW_TRACKING_PASSWORD"] == server.password
    run = MlflowClient(tracking_uri=server.url).get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert "holdout_roc_auc" in run.data.metrics
    assert run.data.tags["loopline.reason"] == "basic auth through the connection"

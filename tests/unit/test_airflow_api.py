"""The demo's REST client: pages through every run and logs in again when its token expires.

The real API is exercised by the e2e tests that follow a backfill (`test_scheduler_crash`); this loopback
server stands in for the two things a real one will not do on demand: more runs than a page, and a token
that expires mid-run.
"""

from __future__ import annotations

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import parse_qs, urlparse

import pytest

from loopline.stack import AirflowApi

RUNS = [{"dag_run_id": f"backfill__{i:03d}", "state": "success"} for i in range(230)]


class _Airflow(BaseHTTPRequestHandler):
    password = ""
    logins = 0
    expire_next = False
    patched: ClassVar[list] = []

    def log_message(self, *args):  # quiet
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if type(self).expire_next:
            type(self).expire_next = False
            return False
        return self.headers.get("Authorization") == f"Bearer token-{type(self).logins}"

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/auth/token":
            if body != {"username": "admin", "password": type(self).password}:
                return self._send(401, {"detail": "bad credentials"})
            type(self).logins += 1
            return self._send(201, {"access_token": f"token-{type(self).logins}"})
        return self._send(404, {})

    def do_GET(self):
        if not self._authorized():
            return self._send(401, {"detail": "token expired"})
        url = urlparse(self.path)
        query = {k: int(v[0]) for k, v in parse_qs(url.query).items() if k in ("limit", "offset")}
        if url.path == "/api/v2/dags/feature_pipeline/dagRuns":
            page = RUNS[query["offset"] : query["offset"] + min(query["limit"], 100)]
            return self._send(200, {"dag_runs": page, "total_entries": len(RUNS)})
        return self._send(404, {"detail": f"DAG not found: {url.path}"})

    def do_PATCH(self):
        if not self._authorized():
            return self._send(401, {})
        type(self).patched.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
        return self._send(200, {"is_paused": False})


@pytest.fixture
def airflow(tmp_path):
    (tmp_path / "airflow").mkdir()
    _Airflow.password = secrets.token_urlsafe(12)  # as `airflow` generates it, and nothing for a scanner to find
    generated = tmp_path / "airflow" / "simple_auth_manager_passwords.json.generated"
    generated.write_text(json.dumps({"admin": _Airflow.password}))
    _Airflow.logins, _Airflow.expire_next, _Airflow.patched = 0, False, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Airflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield AirflowApi.for_env({"LOOPLINE_AIRFLOW_PORT": str(server.server_port), "LOOPLINE_HOME": str(tmp_path)})
    server.shutdown()


def test_every_run_comes_back_across_pages_named_as_the_cli_names_them(airflow):
    runs = airflow.dag_runs("feature_pipeline")
    assert [r["run_id"] for r in runs] == [r["dag_run_id"] for r in RUNS]
    assert _Airflow.logins == 1  # one login for three pages


def test_an_expired_token_logs_in_again_once(airflow):
    airflow.dag_runs("feature_pipeline")
    _Airflow.expire_next = True
    airflow.unpause("feature_pipeline")
    assert _Airflow.logins == 2
    assert _Airflow.patched == [("/api/v2/dags/feature_pipeline", {"is_paused": False})]


def test_an_api_error_names_the_call_and_the_server_detail(airflow):
    with pytest.raises(RuntimeError, match=r"GET /api/v2/dags/nope/dagRuns.*HTTP 404.*DAG not found"):
        airflow.dag_runs("nope")


def test_no_password_file_says_to_bring_the_stack_up(tmp_path):
    api = AirflowApi.for_env({"LOOPLINE_AIRFLOW_PORT": "9", "LOOPLINE_HOME": str(tmp_path)})
    with pytest.raises(RuntimeError, match="is the stack up"):
        api.dag_ids()

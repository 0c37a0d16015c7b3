"""The drift notifier: the message, and each target (log, JSON-lines file, webhook on a loopback server)."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from loopline.config import get_config
from loopline.monitoring import notification
from loopline.orchestration.monitoring_tasks import DECIDE_TASK_ID, DriftNotifier

DRIFT = {"model_version": 3, "summary": "drift: 2 drifted feature(s) (amount_eur, log_amount)", "drift": True}
DECISION = {"trigger": True, "reason": "data drift (...)", "train_run_id": "drift_monitor__2026-02-20"}


class _TI:
    def xcom_pull(self, task_ids=None, key="return_value"):
        if task_ids == "detect_drift":
            return DRIFT
        if task_ids == DECIDE_TASK_ID and key == "decision":
            return DECISION
        return None


def test_the_message_states_verdict_decision_and_run():
    message = notification("2026-02-20", {**DRIFT, "mlflow_run_url": "http://127.0.0.1:5000/#/r"}, DECISION)
    assert message["triggered"] is True
    assert message["drift"] is True
    assert "TRIGGERED train_model" in message["text"]
    assert "drift_monitor__2026-02-20" in message["text"]
    assert "http://127.0.0.1:5000/#/r" in message["text"]
    quiet = notification("2026-02-21", None, {"trigger": False, "reason": "no trigger: no drift result"})
    assert quiet["drift"] is None
    assert "drift not measured" in quiet["text"]
    assert "no retraining" in quiet["text"]


@pytest.fixture
def notify_env(tmp_path):
    saved = dict(os.environ)
    yield tmp_path
    os.environ.clear()
    os.environ.update(saved)
    get_config.cache_clear()


def test_file_target_appends_one_json_line_per_night(notify_env):
    path = notify_env / "alerts" / "notifications.jsonl"
    os.environ["LOOPLINE__DRIFT__NOTIFY_FILE"] = str(path)
    get_config.cache_clear()
    notifier = DriftNotifier(target="file")
    notifier.notify({"ti": _TI(), "ds": "2026-02-20"})
    notifier.notify({"ti": _TI(), "ds": "2026-02-20"})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 2
    assert lines[0]["ds"] == "2026-02-20"
    assert lines[0]["decision"]["train_run_id"] == "drift_monitor__2026-02-20"


def test_webhook_target_posts_json_with_the_connection_token(notify_env):
    received: list[tuple[dict, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((json.loads(body), self.headers.get("Authorization")))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks/loopline"
    os.environ["AIRFLOW_CONN_LOOPLINE_ALERTS"] = json.dumps({"conn_type": "http", "host": url, "password": "t0ken"})
    try:
        DriftNotifier(target="webhook").notify({"ti": _TI(), "ds": "2026-02-20"})
        thread.join(10)
    finally:
        server.server_close()
    assert len(received) == 1
    body, auth = received[0]
    assert body["triggered"] is True
    assert "TRIGGERED train_model" in body["text"]
    assert auth == "Bearer t0ken"


def test_a_broken_channel_never_fails_the_task(notify_env, capfd, caplog):
    os.environ["AIRFLOW_CONN_LOOPLINE_ALERTS"] = json.dumps({"conn_type": "http", "host": "http://127.0.0.1:9/x"})
    DriftNotifier(target="webhook").notify({"ti": _TI(), "ds": "2026-02-20"})  # port 9: connection refused
    captured = capfd.readouterr()
    assert "could not notify webhook" in caplog.text + captured.out + captured.err

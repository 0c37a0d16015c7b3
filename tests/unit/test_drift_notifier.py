"""The drift alert: the message, and each channel (JSON-lines file, webhook through HttpNotifier on a loopback
server); a channel that is down is logged and counted, never raised."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from loopline.config import get_config
from loopline.monitoring import notification
from loopline.orchestration import alerts
from loopline.orchestration.monitoring_tasks import DECIDE_TASK_ID

DRIFT = {"model_version": 3, "summary": "drift: 2 drifted feature(s) (amount_eur, log_amount)", "drift": True}
DECISION = {"trigger": True, "reason": "data drift (...)", "train_run_id": "drift_monitor__2026-02-20"}


class _TI:
    dag_id = "drift_monitor"
    run_id = "scheduled__2026-02-20T00:00:00+00:00"

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


def _channels(*channels: dict) -> None:
    os.environ["LOOPLINE__ALERTS__CHANNELS"] = json.dumps(list(channels))
    get_config.cache_clear()


def test_file_target_appends_one_json_line_per_night(notify_env):
    path = notify_env / "alerts" / "notifications.jsonl"
    _channels({"type": "file", "path": str(path)})
    notifier = alerts.LooplineNotifier("drift")
    notifier.notify({"ti": _TI(), "ds": "2026-02-20"})
    notifier.notify({"ti": _TI(), "ds": "2026-02-20"})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 2
    assert lines[0]["ds"] == "2026-02-20"
    assert lines[0]["kind"] == "drift"
    assert lines[0]["details"]["drift"]["decision"]["train_run_id"] == "drift_monitor__2026-02-20"
    assert lines[0]["run_url"].endswith("/dags/drift_monitor/runs/scheduled__2026-02-20T00%3A00%3A00%2B00%3A00")


def test_webhook_target_posts_json_through_the_http_notifier(notify_env):
    received: list[tuple[dict, str | None, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((json.loads(body), self.headers.get("Authorization"), self.path))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    os.environ["AIRFLOW_CONN_LOOPLINE_ALERTS"] = json.dumps(
        {
            "conn_type": "http",
            "host": "127.0.0.1",
            "port": server.server_address[1],
            "schema": "http",
            "extra": {"Authorization": "Bearer t0ken"},  # the HTTP hook sends its extra as headers
        }
    )
    _channels({"type": "webhook", "conn_id": "loopline_alerts", "endpoint": "hooks/loopline"})
    try:
        alerts.LooplineNotifier("drift").notify({"ti": _TI(), "ds": "2026-02-20"})
        thread.join(10)
    finally:
        server.server_close()
    assert len(received) == 1
    body, auth, path = received[0]
    assert path == "/hooks/loopline"
    assert body["details"]["drift"]["triggered"] is True
    assert "TRIGGERED train_model" in body["text"]
    assert auth == "Bearer t0ken"


def test_a_broken_channel_never_fails_the_task(notify_env, caplog):
    os.environ["AIRFLOW_CONN_LOOPLINE_ALERTS"] = json.dumps(
        {"conn_type": "http", "host": "127.0.0.1", "port": 9, "schema": "http"}  # port 9: connection refused
    )
    path = notify_env / "alerts.jsonl"
    _channels({"type": "webhook", "conn_id": "loopline_alerts"}, {"type": "file", "path": str(path)})
    alerts.DELIVERY_FAILURES.clear()
    alerts.LooplineNotifier("drift").notify({"ti": _TI(), "ds": "2026-02-20"})
    assert "could not send the drift alert" in caplog.text
    assert alerts.DELIVERY_FAILURES["webhook"] == 1
    assert len(path.read_text().splitlines()) == 1  # the other channel still got it

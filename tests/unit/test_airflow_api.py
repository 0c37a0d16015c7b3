"""The REST client the demo and the CLI use: a read that times out is asked again, a write never is."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loopline.runtime.airflow_api import AirflowApi


@pytest.fixture
def server():
    """A loopback API whose first answer to each method comes after the client's timeout."""
    calls: dict[str, int] = {"GET": 0, "PATCH": 0}

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, method: str) -> None:
            calls[method] += 1
            if calls[method] == 1:
                time.sleep(1.0)  # past the client's timeout
            body = json.dumps({"calls": calls[method]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._answer("GET")

        def do_PATCH(self):
            self._answer("PATCH")

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", calls
    httpd.shutdown()


def _client(base: str) -> AirflowApi:
    api = AirflowApi(base, timeout=0.3)
    api._token = "token"  # no login round trip: the server takes any bearer
    return api


def test_a_read_that_times_out_is_asked_again(server):
    base, calls = server
    assert _client(base).request("GET", "/api/v2/dags") == {"calls": 2}
    assert calls["GET"] == 2


def test_a_write_that_times_out_is_not_repeated(server):
    base, calls = server
    with pytest.raises(TimeoutError):
        _client(base).request("PATCH", "/api/v2/dags/x", {"is_paused": False})
    time.sleep(1.2)  # the first answer finishes
    assert calls["PATCH"] == 1

"""A Spark task checks its Spark Connect endpoint first: a dead server is one retried line, not a gRPC trace."""

from __future__ import annotations

import json
import socket

import pytest

from loopline.orchestration import feature_tasks, scoring_tasks
from loopline.orchestration.spark_access import SPARK_TASK, SparkUnreachable, endpoint, require_spark


def _connection(monkeypatch, port: int, token: str | None = None) -> None:
    conn = {"conn_type": "spark_connect", "host": "sc://localhost", "port": port}
    if token:
        conn["password"] = token
    monkeypatch.setenv("AIRFLOW_CONN_LOOPLINE_SPARK", json.dumps(conn))


def test_endpoint_drops_the_token():
    assert endpoint("sc://localhost:15002/;token=abc;use_ssl=false") == ("localhost", 15002)
    assert endpoint("sc://spark-connect") == ("spark-connect", 15002)


def test_an_unreachable_endpoint_names_the_connection_and_hides_the_token(monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    _connection(monkeypatch, port, token="s3cr3t-token")  # pragma: allowlist secret
    with pytest.raises(SparkUnreachable) as error:
        require_spark(timeout=2)
    message = str(error.value)
    assert f"sc://localhost:{port}" in message
    assert "Airflow connection loopline_spark" in message
    assert "s3cr3t-token" not in message


def test_a_listening_endpoint_passes(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        _connection(monkeypatch, server.getsockname()[1])
        require_spark(timeout=2)


def test_every_spark_task_runs_the_check_first():
    tasks = [feature_tasks.ingest_drop, feature_tasks.publish_raw, feature_tasks.build_features]
    tasks += [feature_tasks.publish_features, scoring_tasks.score_champion, scoring_tasks.score_challenger]
    assert SPARK_TASK["pre_execute"] is require_spark
    for decorated in tasks:
        assert decorated.kwargs["pre_execute"] is require_spark, decorated.function.__name__

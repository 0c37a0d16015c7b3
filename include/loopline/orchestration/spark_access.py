"""What every Spark task shares: its Airflow connection and pool, and a reachability check before it starts.

The apache-spark provider's ``@task.pyspark`` builds the Spark session before the task's function runs, so a
Spark Connect server (or the cluster behind it) that is down surfaces as a gRPC stack trace. ``require_spark``
runs first (the operator's ``pre_execute`` hook) and turns that into one line naming the endpoint and the
connection; it is an ordinary error, so Airflow retries the task as it does any infrastructure failure.
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlparse

from loopline.config import get_config


class SparkUnreachable(RuntimeError):
    """The configured Spark Connect endpoint does not accept connections."""


def endpoint(url: str) -> tuple[str, int]:
    """Host and port of a Spark Connect URL (``sc://host:port/;token=...``); the token is never returned."""
    parsed = urlparse(url.replace("sc://", "http://", 1).split(";", 1)[0])
    return parsed.hostname or "localhost", parsed.port or 15002


def require_spark(context: Any = None, timeout: float = 10.0) -> None:
    """Raise :class:`SparkUnreachable` when the ``spark.conn_id`` connection's Spark Connect endpoint does not
    answer. A ``spark`` (spark-submit) connection is left to spark-submit, which names its master itself."""
    from airflow.providers.apache.spark.hooks.spark_connect import SparkConnectHook

    conn_id = get_config().spark.conn_id
    hook = SparkConnectHook(conn_id=conn_id)
    if hook.get_connection(conn_id).conn_type != "spark_connect":
        return
    host, port = endpoint(hook.get_connection_url())
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise SparkUnreachable(
            f"Spark Connect at sc://{host}:{port} (Airflow connection {conn_id}) is not reachable: {exc}. Check the "
            "Spark Connect server and its cluster (`loopline status` on the local stack); the task is retried."
        ) from exc


_CFG = get_config()  # a local YAML read: no network, no Airflow Variables
# The keyword arguments of every ``@task.pyspark``.
SPARK_TASK: dict[str, Any] = {"conn_id": _CFG.spark.conn_id, "pool": _CFG.spark.pool, "pre_execute": require_spark}

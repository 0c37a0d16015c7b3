"""How tasks reach MLflow: a tracking server behind basic auth, named by an Airflow connection.

``mlflow.conn_id`` (default ``loopline_mlflow``) names an ``http`` connection: host, port, schema (``http`` or
``https``) and the login/password of the MLflow user. When it exists, every task that talks to MLflow uses
its URL as the tracking URI and its login/password as ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD``. Those go into the task's environment, not into arguments: MLflow's client reads
them at each request, and the local trainer, a child process, inherits them (command lines show in ``ps``).
The kubernetes runner's pod gets them from its Kubernetes secret, never from here.

When the connection does not exist, nothing changes: ``MLFLOW_TRACKING_URI`` or the configured
``mlflow.tracking_uri`` (the embedded SQLite store by default), as :func:`loopline.training.tracking.tracking_uri`.

This module is imported by DAG files through the task modules: MLflow and Airflow's connection lookup are
imported inside the functions.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from loopline.config import LooplineConfig, get_config

__all__ = ["MlflowAccess", "configure_mlflow", "connection_url", "mlflow_access", "mlflow_client"]

URI_VAR = "MLFLOW_TRACKING_URI"
USERNAME_VAR = "MLFLOW_TRACKING_USERNAME"
PASSWORD_VAR = "MLFLOW_TRACKING_PASSWORD"  # noqa: S105  # pragma: allowlist secret (a name, not a value)
_SCHEMES = ("http", "https")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MlflowAccess:
    """Where MLflow is and who the tasks are there; ``conn_id`` is None when the config decided."""

    tracking_uri: str
    conn_id: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a repr, a log line or an exception

    def env(self) -> dict[str, str]:
        """The variables a process (or its children) needs to reach MLflow this way; empty without a connection."""
        if self.conn_id is None:
            return {}
        env = {URI_VAR: self.tracking_uri}
        if self.username:
            env[USERNAME_VAR] = self.username
        if self.password:
            env[PASSWORD_VAR] = self.password
        return env

    def describe(self) -> str:
        """``http://host:port as <user> (Airflow connection <id>)``: for logs, without the password."""
        if self.conn_id is None:
            return f"{self.tracking_uri} (mlflow.tracking_uri / {URI_VAR}: no Airflow connection)"
        who = f" as {self.username}" if self.username else " anonymously"
        return f"{self.tracking_uri}{who} (Airflow connection {self.conn_id})"


def connection_url(conn_id: str, host: str | None, port: int | None, schema: str | None) -> str:
    """The tracking URI of an ``http`` connection, as Airflow's HTTP hook builds its base URL.

    ``host`` may be a bare name (``mlflow.internal``) or a URL (``https://mlflow.example.org/mlflow``);
    ``schema`` is the URL scheme (``http`` by default), ``port`` is added unless the host already names one.
    """
    host = (host or "").strip()
    if not host:
        raise ValueError(f"Airflow connection {conn_id!r} has no host: set it to the MLflow tracking server")
    if "://" not in host:
        scheme = (schema or "http").lower()
        if scheme not in _SCHEMES:
            raise ValueError(f"Airflow connection {conn_id!r}: schema {schema!r} must be http or https")
        host = f"{scheme}://{host}"
    parts = urlsplit(host)
    if parts.scheme not in _SCHEMES:
        raise ValueError(f"Airflow connection {conn_id!r}: host {host!r} must be an http(s) URL")
    netloc = parts.netloc.rpartition("@")[2]  # credentials belong in login/password, never in the URI
    if port and parts.port is None:
        netloc = f"{netloc}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _connection(conn_id: str):
    """The Airflow connection ``conn_id`` (environment, secrets backend or metadata DB), or None."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None


def mlflow_access(cfg: LooplineConfig | None = None) -> MlflowAccess:
    """How to reach MLflow: the ``mlflow.conn_id`` connection when it exists, else today's tracking URI."""
    from loopline.training.tracking import tracking_uri

    cfg = cfg or get_config()
    conn_id = cfg.mlflow.conn_id
    conn = _connection(conn_id) if conn_id else None
    if conn is None:
        return MlflowAccess(tracking_uri=tracking_uri(cfg.mlflow.tracking_uri))
    return MlflowAccess(
        tracking_uri=connection_url(conn_id, conn.host, conn.port, conn.schema),
        conn_id=conn_id,
        username=conn.login or None,
        password=conn.password or None,
    )


def configure_mlflow(cfg: LooplineConfig | None = None) -> str:
    """Point this process (and the children it starts) at MLflow; returns the tracking URI to use.

    With the connection, its URL and credentials replace any ``MLFLOW_TRACKING_*`` already in the environment
    (the connection is the authority; a stale user from elsewhere must not be sent). Without it the
    environment is left as it is and the URI is ``MLFLOW_TRACKING_URI`` or the configured one.
    """
    access = mlflow_access(cfg)
    if access.conn_id is not None:
        if access.password:
            _mask(access.password)
        for name in (USERNAME_VAR, PASSWORD_VAR):
            os.environ.pop(name, None)
        os.environ.update(access.env())
    log.info("MLflow: %s", access.describe())
    return access.tracking_uri


def mlflow_client(cfg: LooplineConfig | None = None):
    """An ``MlflowClient`` for the tracking URI of :func:`configure_mlflow` (credentials in the environment)."""
    from loopline.training.tracking import mlflow_client as client_for

    return client_for(configure_mlflow(cfg))


def _mask(secret: str) -> None:
    """Have Airflow's log masker redact ``secret`` (the lookup masks it too; the trainer's output is relayed)."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - outside an Airflow installation there is no task log to mask
        return
    mask_secret(secret)

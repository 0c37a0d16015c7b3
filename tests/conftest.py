"""Session-wide fixtures: real services started once per test session.

- ``postgres``: the system PostgreSQL on 127.0.0.1:5432 when it answers, else an embedded pgserver; a fresh
  database per session either way, with the session's own owner, loader and analyst roles (roles are
  cluster-wide, so their names carry the session's id, also in ``LOOPLINE__POSTGRES__*_ROLE``), exported as
  ``AIRFLOW_CONN_LOOPLINE_POSTGRES`` logging in as the loader: every task of every test proves the loader's
  privileges are enough. Tasks no longer migrate: a test migrates its schema with ``postgres.migrate``.
- ``spark``: a Spark Connect server on a free loopback port and a thin client session per module.
- ``s3``: an S3-compatible ``moto_server`` on loopback, exported as ``AIRFLOW_CONN_LOOPLINE_S3``.
- ``airflow_db``: a migrated Airflow SQLite home whose dags folder is the repo's ``dags/``.

Airflow and Loopline read their settings from the environment, so it is set here, before any test module
imports them, to a throwaway home: tests never touch a developer's ``.loopline`` folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SESSION_HOME = Path(tempfile.mkdtemp(prefix="loopline-tests-"))
SESSION_HOME.chmod(0o755)  # an embedded pgserver runs postgres as its own system user

os.environ.update(
    {
        "LOOPLINE_HOME": str(SESSION_HOME / "home"),
        "AIRFLOW_HOME": str(SESSION_HOME / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(SESSION_HOME / "airflow" / "logs"),
        "AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR": "True",
    }
)
os.environ.pop("LOOPLINE_CONFIG", None)
for _name in [name for name in os.environ if name.startswith("LOOPLINE__")]:
    os.environ.pop(_name)  # a developer's overrides must not change what the tests see
# dag.test() of Airflow 3.3.0 fails a successful run of a DAG with deadline alerts: tests that run DAGs leave them
# out; tests/integration/test_alerts.py turns them on to check them.
os.environ["LOOPLINE__ALERTS__LATENESS__ENABLED"] = "false"
ROLE_PREFIX = f"lt{uuid.uuid4().hex[:8]}"
SESSION_ROLES = {kind: f"{ROLE_PREFIX}_{kind}" for kind in ("owner", "loader", "analyst")}
for _kind, _role in SESSION_ROLES.items():
    os.environ[f"LOOPLINE__POSTGRES__{_kind.upper()}_ROLE"] = _role

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stack_test_env(home: Path) -> dict[str, str]:
    """The environment for a throwaway local stack (``loopline up``) in ``home``: free loopback ports of its
    own, a small Spark driver, and none of the developer's Airflow, Loopline or MLflow settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "LOOPLINE", "MLFLOW"))}
    env.update(
        LOOPLINE_HOME=str(home),
        LOOPLINE_AIRFLOW_PORT=str(free_port()),
        LOOPLINE_POSTGRES_PORT=str(free_port()),  # the embedded PostgreSQL's TCP listener (BI tools)
        LOOPLINE__SPARK__CONNECT_URL=f"sc://127.0.0.1:{free_port()}",
        LOOPLINE__SPARK__DRIVER_MEMORY="1g",
        LOOPLINE__MLFLOW__UI_URL=f"http://127.0.0.1:{free_port()}",
    )
    return env


def wait_for_port(port: int, timeout: float, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"service on port {port} not ready after {timeout}s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def session_home() -> Path:
    return SESSION_HOME


# ---------------------------------------------------------------------------------------------------------
# PostgreSQL


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str  # the administrator (superuser): setup and assertions
    database: str

    @property
    def roles(self):
        from loopline.db import Roles

        return Roles(SESSION_ROLES["owner"], SESSION_ROLES["loader"], SESSION_ROLES["analyst"])

    @property
    def loader(self) -> str:
        return self.roles.loader

    def connect(self, user: str | None = None, password: str | None = None):
        import psycopg2

        return psycopg2.connect(
            host=self.host, port=self.port, user=user or self.user, password=password, dbname=self.database
        )

    def connect_loader(self):
        """A connection as the role Airflow's tasks log in as."""
        return self.connect(self.loader)

    def migrate(self, schema: str) -> list[str]:
        """Migrate ``schema`` as the owner and grant the loader and analyst (what `loopline migrate` does)."""
        from loopline import db

        conn = self.connect()
        try:
            return db.migrate(conn, schema, roles=self.roles)
        finally:
            conn.close()

    def query(self, sql: str, *args) -> list[tuple]:
        """All rows of one query on a fresh connection."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall()
        finally:
            conn.close()

    @property
    def airflow_conn(self) -> str:
        return json.dumps(
            {
                "conn_type": "postgres",
                "host": self.host,
                "port": self.port,
                "login": self.loader,
                "schema": self.database,
            }
        )


def _system_postgres_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            pass
    except OSError:
        return False
    import psycopg2

    try:
        psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres").close()
    except psycopg2.Error:
        return False
    return True


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    import psycopg2

    database = f"loopline_test_{uuid.uuid4().hex[:8]}"
    server = None
    if _system_postgres_up():
        admin = Postgres("127.0.0.1", 5432, "postgres", "postgres")
    else:
        import pgserver

        server = pgserver.get_server(SESSION_HOME / "pgdata", cleanup_mode="stop")
        admin = Postgres(str(server.get_postmaster_info().socket_dir), 5432, "postgres", "postgres")
    conn = admin.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{database}"')
    conn.close()
    pg = Postgres(admin.host, admin.port, admin.user, database)
    from loopline import db
    from loopline.config import get_config

    get_config.cache_clear()
    conn = pg.connect()
    db.bootstrap(conn, get_config(), roles=pg.roles)  # trusted connections here: no passwords
    conn.close()
    pg.migrate(get_config().postgres.schema_)
    os.environ["AIRFLOW_CONN_LOOPLINE_POSTGRES"] = pg.airflow_conn
    yield pg
    os.environ.pop("AIRFLOW_CONN_LOOPLINE_POSTGRES", None)
    conn = admin.connect()
    conn.autocommit = True
    with conn.cursor() as cur, contextlib.suppress(psycopg2.Error):
        cur.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    for role in SESSION_ROLES.values():  # owned objects and grants went with the database
        with conn.cursor() as cur, contextlib.suppress(psycopg2.Error):
            cur.execute(f"DROP ROLE IF EXISTS {role}")
    conn.close()
    if server is not None:
        server.cleanup()


# ---------------------------------------------------------------------------------------------------------
# Spark Connect


@pytest.fixture(scope="session")
def spark_connect_url() -> Iterator[str]:
    """A Spark Connect server on a free loopback port, started once for the session."""
    from loopline import stack
    from loopline.config import get_config

    port = free_port()
    url = f"sc://127.0.0.1:{port}"
    os.environ["LOOPLINE__SPARK__CONNECT_URL"] = url
    get_config.cache_clear()
    cfg = get_config()
    (SESSION_HOME / "home").mkdir(parents=True, exist_ok=True)
    log = SESSION_HOME / "spark-connect.log"
    env = {**os.environ, "SPARK_HOME": str(stack.spark_home()), "PYSPARK_PYTHON": sys.executable}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    command = stack.spark_command(cfg)
    command[command.index("--driver-memory") + 1] = "1g"
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, 120, process, log)
        os.environ["AIRFLOW_CONN_LOOPLINE_SPARK"] = json.dumps(
            {"conn_type": "spark_connect", "host": "sc://127.0.0.1", "port": port}
        )
        yield url
    finally:
        stop(process)
        os.environ.pop("LOOPLINE__SPARK__CONNECT_URL", None)
        get_config.cache_clear()


@pytest.fixture(scope="module")
def spark(spark_connect_url: str):
    """A client session per module: a Spark task run in-process (``dag.test()``) stops the active session at its
    end, so no module may depend on a session another module created (the server is shared)."""
    from pyspark.sql import SparkSession

    session = SparkSession.builder.remote(spark_connect_url).getOrCreate()
    yield session
    session.stop()


# ---------------------------------------------------------------------------------------------------------
# S3-compatible server


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    port = free_port()
    log = SESSION_HOME / "moto.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port(port, 30, process, log)
        endpoint = f"http://127.0.0.1:{port}"
        os.environ["AIRFLOW_CONN_LOOPLINE_S3"] = json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
            }
        )
        yield S3Server(endpoint)
    finally:
        stop(process)
        os.environ.pop("AIRFLOW_CONN_LOOPLINE_S3", None)


# ---------------------------------------------------------------------------------------------------------
# Airflow


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata DB in the session's AIRFLOW_HOME (``dag.test()`` needs one)."""
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([str(BIN / "airflow"), "db", "migrate"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return home


@pytest.fixture(autouse=True, scope="module")
def _mlflow_tracking_per_module() -> Iterator[None]:
    """Each module starts on its own MLflow store: ``mlflow.set_tracking_uri`` in a task run in-process (dag.test)
    also exports ``MLFLOW_TRACKING_URI``, which would point the next module's tasks at this module's store."""
    before = {name: value for name, value in os.environ.items() if name.startswith("MLFLOW_")}
    yield
    if "mlflow" in sys.modules:
        sys.modules["mlflow"].set_tracking_uri(None)
    for name in [name for name in os.environ if name.startswith("MLFLOW_")]:
        if name not in before:
            del os.environ[name]
    os.environ.update(before)


@contextlib.contextmanager
def environment(overrides: dict[str, str]) -> Iterator[None]:
    """``overrides`` set for a block (a module's fixture), then what was there before put back; the config is
    read again both times."""
    from loopline.config import get_config

    saved = {name: os.environ.get(name) for name in overrides}
    os.environ.update(overrides)
    get_config.cache_clear()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_config.cache_clear()


def dag_environment(root: Path, schema: str, model: str | None = None, sensor_timeout: int = 3) -> dict[str, str]:
    """What a DAG test module gives its tasks: a lake, reports, an MLflow store and alert file of its own under
    ``root``, its own Postgres schema (and registered model), short sensors and the local landing connection."""
    settings = {
        "LOOPLINE__STORAGE__LAKE_URI": str(root / "lake"),
        "LOOPLINE__STORAGE__REPORTS_URI": str(root / "reports"),
        "LOOPLINE__MLFLOW__TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "LOOPLINE__MLFLOW__ARTIFACT_URI": str(root / "artifacts"),
        "LOOPLINE__POSTGRES__SCHEMA": schema,
        "LOOPLINE__ALERTS__CHANNELS": json.dumps([{"type": "file", "path": str(root / "notifications.jsonl")}]),
        "LOOPLINE__VALIDATION__SENSOR_MODE": "reschedule",
        "LOOPLINE__VALIDATION__SENSOR_TIMEOUT_SECONDS": str(sensor_timeout),
        "LOOPLINE__VALIDATION__SENSOR_POKE_SECONDS": "1",
        "AIRFLOW_CONN_LOOPLINE_LANDING_FS": json.dumps({"conn_type": "fs", "extra": {"path": ""}}),
    }
    if model is not None:
        settings["LOOPLINE__MLFLOW__REGISTERED_MODEL"] = model
    return settings


def load_dag(dag_id: str):
    """One DAG parsed from its file in ``dags/``, as the DAG processor would."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags" / f"{dag_id}.py")).dags[dag_id]


def finish_training_runs() -> None:
    """What the scheduler would do once triggered trainings finished (dag.test() leaves them queued in the
    session's metadata database, where drift_monitor's "training already queued" guard would see them)."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    with create_session() as session:
        for run in session.query(DagRun).filter(DagRun.dag_id == "train_model").all():
            run.state = DagRunState.SUCCESS


def run_day(dag, day):
    """``dag.test()`` for the logical date ``day``: the run and each task's state."""
    import datetime as dt

    dagrun = dag.test(logical_date=dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC))
    return dagrun, {ti.task_id: ti.state for ti in dagrun.get_task_instances()}


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(SESSION_HOME, ignore_errors=True)

"""The local stack on embedded defaults: Airflow standalone, Spark Connect, PostgreSQL and MLflow.

Everything runs as plain processes on 127.0.0.1, with PIDs, logs and data under one state folder
(``$LOOPLINE_HOME``, default ``<repo>/.loopline``). ``down`` stops only what ``up`` started (it
reads the PID files and checks each PID still runs the command it started), and ``status`` asks each
component for its health. No Docker, no cloud.

Every service that listens authenticates, in this profile too: Airflow's UI and API (its generated admin
password), Spark Connect (a token), the MLflow UI (MLflow's basic-auth app, user ``admin``). The secrets are
generated on first start into ``<state>/secrets.json`` (mode 0600) and reach each process through its
environment or a file only the user can read, never its command line.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from loopline.config import LooplineConfig, get_config, load_config, loopline_home, repo_root, resolve_uri

EMBEDDED, CLUSTER = "embedded", "cluster"
START_MARKER = "--- loopline: started"
PROFILES = (EMBEDDED, CLUSTER)
AIRFLOW_PORT = int(os.environ.get("LOOPLINE_AIRFLOW_PORT", "8080"))
DEV_ENV_FILE = Path(__file__).parent / "config" / "dev" / "airflow.env"
POSTGRES_CONN_VAR = "AIRFLOW_CONN_LOOPLINE_POSTGRES"
# What `airflow standalone` runs, as separate processes: the scheduler and triggerer skip their log
# servers, which would listen on every interface; the api-server reads task logs from the shared folder.
AIRFLOW_COMPONENTS = {
    "airflow-api-server": ["api-server"],
    "airflow-scheduler": ["scheduler", "--skip-serve-logs"],
    "airflow-dag-processor": ["dag-processor"],
    "airflow-triggerer": ["triggerer", "--skip-serve-logs"],
}


@dataclass(frozen=True)
class Health:
    """One component's state as ``status`` reports it."""

    name: str
    healthy: bool
    detail: str


def state_dir() -> Path:
    """The folder holding PID files, logs and service data."""
    path = loopline_home() / "stack"
    path.mkdir(parents=True, exist_ok=True)
    return path


def venv_bin() -> Path:
    """The folder of the running interpreter's console scripts (airflow, mlflow, spark-submit)."""
    return Path(sys.executable).parent


def spark_home() -> Path:
    """SPARK_HOME for the pip-installed pyspark (spark-submit needs it or the venv on PATH)."""
    import pyspark

    return Path(pyspark.__file__).parent


def parallelism() -> int:
    """Airflow task parallelism sized to the machine: two task slots per core, at least four."""
    return max(4, 2 * (os.cpu_count() or 2))


# The heavy libraries the tasks import, loaded once into the LocalExecutor's forkserver: every worker and
# every task process forked from it inherits them instead of importing them again (GX alone takes ~6 s
# per task on two cores). A module that fails to import here is skipped; the task then imports it itself.
TASK_PRELOAD_MODULES = (
    "airflow.sdk.execution_time.task_runner",
    "airflow.providers.apache.spark.decorators.pyspark",
    "pandas",
    "pyarrow.parquet",
    "pyspark.sql.connect.session",
    "great_expectations",
    "mlflow",
    "xgboost",
    "loopline.validation",
    "loopline.lake",
    # drift_monitor's detector: torch, transformers and scikit-learn behind it (17-27 s per night otherwise)
    "alibi_detect.cd",
)


def host_port(url: str, default_port: int) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or default_port


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 2.0) -> tuple[bool, str]:
    """GET ``url``; healthy on a 2xx answer. Returns (ok, body or error)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback URL from config
            return 200 <= response.status < 300, response.read(2000).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        return False, str(exc)


# ---------------------------------------------------------------------------------------------------------
# Environment shared by every component: dev connections/variables and Airflow's settings.


def fill(value: str, values: Mapping[str, str]) -> str:
    """``${NAME}`` placeholders of a settings file filled in (unknown ones are left as they are)."""
    return string.Template(value).safe_substitute(values)


def read_env_file(path: Path, values: Mapping[str, str] | None = None) -> dict[str, str]:
    """``NAME=value`` lines of ``path`` (comments and blanks skipped), ``${...}`` filled in from ``values``."""
    env: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name.strip()] = fill(value.strip(), values or {})
    return env


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only the user can read (created that way, never briefly world-readable)."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(text)


# The stack's generated secrets: what both profiles use, then the cluster profile's own services.
SECRET_NAMES = (
    "SPARK_TOKEN",
    "MLFLOW_PASSWORD",
    "MLFLOW_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SECRET",
    "PG_OWNER_PASSWORD",
    "PG_LOADER_PASSWORD",
    "PG_ANALYST_PASSWORD",
    "REDIS_PASSWORD",
    "SPARK_CLUSTER_SECRET",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
    "FERNET_KEY",
    "JWT_SECRET",
    "API_SECRET",
)


def stack_secrets() -> dict[str, str]:
    """The stack's secrets, generated on first start and kept in ``<state>/secrets.json`` (mode 0600)."""
    path = state_dir() / "secrets.json"
    known = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    missing = [name for name in SECRET_NAMES if name not in known]
    for name in missing:
        # Fernet wants 32 url-safe base64 bytes; the others end up in URLs, so letters and digits only.
        known[name] = (
            base64.urlsafe_b64encode(os.urandom(32)).decode() if name == "FERNET_KEY" else secrets.token_hex(24)
        )
    if missing or (path.stat().st_mode & 0o077):
        write_private(path, json.dumps(known, indent=2))
    return known


@dataclass(frozen=True)
class PgAddress:
    """Where the embedded PostgreSQL listens: its Unix socket folder, and the port (the socket's name)."""

    host: str
    port: int = 5432


def dev_environment(cfg: LooplineConfig, pg: PgAddress | None = None) -> dict[str, str]:
    """The checked-in dev connections and variables with placeholders filled in.

    Values already present in the process environment win, so a configured connection (for example an
    external Postgres in ``AIRFLOW_CONN_LOOPLINE_POSTGRES``) is never replaced by the embedded default.
    """
    _, spark_port = host_port(cfg.spark.connect_url, 15002)
    values = {
        "LOOPLINE_HOME": str(loopline_home()),
        "SPARK_TOKEN": stack_secrets()["SPARK_TOKEN"],
        "PG_HOST": pg.host if pg else "",
        "PG_PORT": str(pg.port if pg else 5432),  # the socket's name: 5432 unless the cluster profile moved it
        "SPARK_PORT": str(spark_port),
        "PG_LOADER_ROLE": cfg.postgres.loader_role,
        "PG_ANALYST_ROLE": cfg.postgres.analyst_role,
    }
    env = read_env_file(DEV_ENV_FILE, values)
    if not pg:  # an external Postgres: its connections (loader, analyst) are the operator's to set
        env.pop(POSTGRES_CONN_VAR)
        env.pop("AIRFLOW_CONN_LOOPLINE_POSTGRES_ANALYST", None)
    return {name: value for name, value in env.items() if name not in os.environ}


def airflow_environment(home: Path, pg: PgAddress | None = None) -> dict[str, str]:
    """Airflow settings for the embedded stack: LocalExecutor, repo folders, loopback only.

    The metadata database is the embedded PostgreSQL (SQLite locks under a scheduler, a dag-processor and
    task processes writing at once: backfills failed with "database is locked").
    """
    root = repo_root()
    database = {}
    if pg:
        database["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = (
            f"postgresql+psycopg2://postgres@/airflow?host={pg.host}&port={pg.port}"
        )
    return {
        **database,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__SCHEDULER__MP_START_METHOD": "forkserver",
        "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD": ",".join(TASK_PRELOAD_MODULES),
        "AIRFLOW__CORE__PARALLELISM": str(parallelism()),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(parallelism()),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{AIRFLOW_PORT}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(AIRFLOW_PORT),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{AIRFLOW_PORT}",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__TRIGGERER__DEFAULT_CAPACITY": "100",
        # A scheduler that died (killed, laptop slept) and was started again resets the tasks it left running
        # within a minute instead of Airflow's default five (tests/e2e/test_scheduler_crash.py).
        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "60",
        # Everything is on loopback; this also spares forked task processes macOS's proxy lookup, which crashes.
        "NO_PROXY": "*",
    }


def lineage_environment(cfg: LooplineConfig) -> dict[str, str]:
    """OpenLineage for the local stack: the provider's file transport into ``lineage.events_file`` (JSON lines,
    appended; no server), jobs in the ``lineage.namespace`` namespace; the provider off when ``lineage.enabled``
    is false. Production sets an HTTP transport instead (docker-compose.yaml)."""
    if not cfg.lineage.enabled:
        return {"AIRFLOW__OPENLINEAGE__DISABLED": "True"}
    events = Path(resolve_uri(cfg.lineage.events_file))
    events.parent.mkdir(parents=True, exist_ok=True)
    transport = {"type": "file", "log_file_path": str(events), "append": True}
    return {
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": cfg.lineage.namespace,
    }


def stack_environment(cfg: LooplineConfig, pg: PgAddress | None = None, profile: str = EMBEDDED) -> dict[str, str]:
    """The full environment the stack's processes (and ``airflow`` CLI calls) run with."""
    env = dict(os.environ)
    if profile == CLUSTER:
        from loopline import cluster

        if pg is None:
            raise ValueError("the cluster profile needs the embedded PostgreSQL's address")
        profile_env = cluster.cluster_environment(cfg, pg)
        cfg = load_config(environ={**env, **profile_env})
    env.update(dev_environment(cfg, pg))
    env.update(airflow_environment(loopline_home() / "airflow", pg))
    # A transport already in the environment (e.g. an HTTP one to a lineage server) wins over the local file.
    env.update({k: v for k, v in lineage_environment(cfg).items() if k not in os.environ})
    if profile == CLUSTER:
        env.update(profile_env)  # the executor and the rest win over the embedded defaults
    env["SPARK_HOME"] = str(spark_home())
    env["PATH"] = f"{venv_bin()}{os.pathsep}{env.get('PATH', '')}"
    env["PYSPARK_PYTHON"] = sys.executable
    return env


# ---------------------------------------------------------------------------------------------------------
# Process bookkeeping: a PID file per component, with the start time that proves the PID is still ours.


def _pid_file(name: str) -> Path:
    return state_dir() / f"{name}.pid"


def log_file(name: str) -> Path:
    path = state_dir() / "logs"
    path.mkdir(exist_ok=True)
    return path / f"{name}.log"


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat): a PID reused later differs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _state(pid: int) -> str | None:
    """The process state letter of ``pid`` (field 3 of /proc/PID/stat): ``Z`` for a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def running_pid(name: str) -> int | None:
    """The PID ``up`` recorded for ``name`` if that very process (same start time) is still alive."""
    pid_file = _pid_file(name)
    if not pid_file.exists():
        return None
    record = json.loads(pid_file.read_text(encoding="utf-8"))
    pid = int(record["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    if Path("/proc").exists() and _start_time(pid) != record["started"]:
        return None  # the PID now belongs to some other process: never signal it
    if _state(pid) == "Z":
        return None  # killed, and its parent (init, once `up` has exited) has not reaped it yet
    return pid


def spawn(name: str, command: list[str], env: dict[str, str]) -> int:
    """Start ``command`` detached in its own session, logging to ``logs/<name>.log`` after a start marker
    (:func:`log_since_start` reads what this start wrote)."""
    log = log_file(name).open("ab")
    log.write(f"\n{START_MARKER} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
    log.flush()
    process = subprocess.Popen(
        command,
        env=env,
        cwd=str(loopline_home()),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    record = {"pid": process.pid, "started": _start_time(process.pid), "command": command}
    _pid_file(name).write_text(json.dumps(record))
    return process.pid


def log_since_start(name: str) -> str:
    """What the component's log holds since its last start by :func:`spawn`."""
    path = log_file(name)
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    return text.rsplit(START_MARKER, 1)[-1]


def stop_process(name: str, grace: float = 30.0) -> bool:
    """Stop the process group ``up`` started for ``name``; returns whether anything was stopped."""
    pid = running_pid(name)
    _pid = _pid_file(name)
    if pid is None:
        _pid.unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and running_pid(name):
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # whatever ignored the polite signal, children included
    _pid.unlink(missing_ok=True)
    return True


def wait_until(check: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    """Poll ``check`` until it is true; on timeout raise with the tail of the component's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    tail = ""
    if log and log.exists():
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-30:])
    raise RuntimeError(f"{what} did not become healthy within {timeout:.0f}s. Last log lines:\n{tail}")


# ---------------------------------------------------------------------------------------------------------
# Components.


def pg_data_dir() -> Path:
    return loopline_home() / "postgres"


def psql(pg: PgAddress, sql: str, database: str = "postgres") -> str:
    """Run ``sql`` as the superuser over the embedded server's socket; returns psql's unaligned output."""
    connection = ["-h", pg.host, "-p", str(pg.port), "-U", "postgres", "-d", database]
    result = subprocess.run(
        [str(Path(_pgserver_bin()) / "psql"), *connection, "-At", "-v", "ON_ERROR_STOP=1"],
        input=sql,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"psql on {pg.host}:{pg.port} failed: {result.stderr.strip()}")
    return result.stdout


# Socket connections stay trusted (the socket folder is the stack's own); TCP needs a password.
_PG_HBA = """local all all trust
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""


def start_postgres(tcp_port: int | None = None) -> PgAddress:
    """Start the embedded PostgreSQL (pgserver) with databases ``airflow`` and ``loopline``.

    ``airflow`` holds Airflow's metadata; ``loopline`` the analysts' tables unless a Postgres connection is
    configured. pgserver listens on a Unix socket only; with ``tcp_port`` (``loopline up`` passes
    ``LOOPLINE_POSTGRES_PORT``, default 15432, in both profiles) the server is restarted to also listen on
    127.0.0.1 with scram-sha-256 password authentication, so a BI tool (or the cluster's tasks) can connect;
    the socket stays in its folder, trusted, for the stack's own processes.
    ``cleanup_mode=None`` keeps the server running after this CLI exits.
    """
    import pgserver
    from pgserver import _commands
    from pgserver.utils import PostmasterInfo

    pgdata = pg_data_dir()
    pgdata.mkdir(parents=True, exist_ok=True)
    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running():
        info = pgserver.get_server(pgdata, cleanup_mode=None).get_postmaster_info()
    pg = PgAddress(str(info.socket_dir), info.port or 5432)
    if tcp_port is not None and pg.port != tcp_port:
        (pgdata / "pg_hba.conf").write_text(_PG_HBA)
        user = "pgserver" if os.geteuid() == 0 else None  # pgserver refuses to run postgres as root
        options = ["-o", f"-h 127.0.0.1 -p {tcp_port} -k {pg.host}"]
        log = str(pgdata / "log")  # written by the server's own system user
        _commands.pg_ctl(["-w", *options, "-l", log, "restart"], pgdata=pgdata, user=user, timeout=60)
        pg = PgAddress(pg.host, tcp_port)
    existing = psql(pg, "SELECT datname FROM pg_database;").split()
    for database in ("airflow", "loopline"):
        if database not in existing:
            psql(pg, f"CREATE DATABASE {database};")
    pid = PostmasterInfo.read_from_pgdata(pgdata).pid
    (state_dir() / "postgres.json").write_text(json.dumps({"host": pg.host, "port": pg.port, "pid": pid}))
    return pg


def role_passwords(cfg: LooplineConfig) -> dict[str, str]:
    """The generated password of each predictions-database role, by role name (see ``secrets.json``)."""
    keys = stack_secrets()
    return {
        cfg.postgres.owner_role: keys["PG_OWNER_PASSWORD"],
        cfg.postgres.loader_role: keys["PG_LOADER_PASSWORD"],
        cfg.postgres.analyst_role: keys["PG_ANALYST_PASSWORD"],
    }


def migrate_embedded(cfg: LooplineConfig, pg: PgAddress) -> list[str]:
    """Roles, ownership and migrations of the embedded server's ``loopline`` database (idempotent).

    The superuser (over the stack's own socket) creates or updates the roles with their generated passwords
    and hands the schema to the owner; the owner then migrates and re-grants. Returns the versions applied."""
    import psycopg2

    from loopline import db

    admin = psycopg2.connect(host=pg.host, port=pg.port, user="postgres", dbname="loopline")
    try:
        roles = db.bootstrap(admin, cfg, role_passwords(cfg))
    finally:
        admin.close()
    owner = psycopg2.connect(host=pg.host, port=pg.port, user=roles.owner, dbname="loopline")
    try:
        return db.migrate(owner, cfg.postgres.schema_, roles=roles)
    finally:
        owner.close()


def postgres_login_hint(cfg: LooplineConfig, port: int) -> str:
    """Where a person finds the analysts' login (never the password itself: it would land in logs)."""
    return (
        f"analysts: psql -h 127.0.0.1 -p {port} -U {cfg.postgres.analyst_role} loopline "
        f"(password PG_ANALYST_PASSWORD in {state_dir() / 'secrets.json'}; see docs/analysts.md)"
    )


def embedded_pg() -> PgAddress | None:
    """The socket folder and port of the embedded PostgreSQL when ``up`` started one."""
    record = state_dir() / "postgres.json"
    if not record.exists():
        return None
    saved = json.loads(record.read_text())
    return PgAddress(saved["host"], saved.get("port", 5432))


def embedded_pg_host() -> str | None:
    """The socket directory of the embedded PostgreSQL when ``up`` started one."""
    pg = embedded_pg()
    return pg.host if pg else None


def postgres_health() -> Health:
    pg = embedded_pg()
    if not pg:
        return Health("postgres", False, "not started")
    host = pg.host
    pg_isready = Path(_pgserver_bin()) / "pg_isready"
    result = subprocess.run(
        [str(pg_isready), "-h", host, "-p", str(pg.port), "-d", "loopline", "-U", "postgres"],
        capture_output=True,
        text=True,
    )
    predictions = f"predictions in {POSTGRES_CONN_VAR}" if POSTGRES_CONN_VAR in os.environ else "predictions here"
    detail = f"embedded, socket {host} (Airflow metadata; {predictions}): {result.stdout.strip()}"
    return Health("postgres", result.returncode == 0, detail)


def _pgserver_bin() -> str:
    from pgserver._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH)


def stop_postgres() -> bool:
    """Stop the embedded PostgreSQL if ``up`` started it (as the same system user pgserver used)."""
    if embedded_pg_host() is None:
        return False
    from pgserver import _commands

    pgdata = pg_data_dir()
    if (pgdata / "postmaster.pid").exists():
        user = "pgserver" if os.geteuid() == 0 else None  # pgserver refuses to run postgres as root
        _commands.pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata, user=user, timeout=60)
    (state_dir() / "postgres.json").unlink(missing_ok=True)
    return True


def _conf(value: str | bool | int | float) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)  # YAML's true is Spark's "true"


def spark_command(cfg: LooplineConfig) -> list[str]:
    """spark-submit the Spark Connect server bound to the configured loopback address."""
    host, port = host_port(cfg.spark.connect_url, 15002)
    return [
        str(spark_home() / "bin" / "spark-submit"),
        "--class",
        "org.apache.spark.sql.connect.service.SparkConnectServer",
        "--name",
        "loopline-spark-connect",
        "--driver-memory",
        cfg.spark.driver_memory,
        "--conf",
        f"spark.connect.grpc.binding.address={host}",
        "--conf",
        f"spark.connect.grpc.binding.port={port}",
        "--conf",
        f"spark.sql.shuffle.partitions={cfg.spark.shuffle_partitions}",
        "--conf",
        "spark.sql.session.timeZone=UTC",
        "--conf",
        "spark.ui.enabled=false",
        "--conf",
        "spark.driver.bindAddress=127.0.0.1",
        "--conf",
        "spark.driver.host=127.0.0.1",
        "--conf",
        f"spark.local.dir={loopline_home() / 'spark-tmp'}",
        *[arg for key, value in sorted(cfg.spark.server_conf.items()) for arg in ("--conf", f"{key}={_conf(value)}")],
        "spark-internal",
    ]


def spark_health(cfg: LooplineConfig) -> Health:
    host, port = host_port(cfg.spark.connect_url, 15002)
    ok = port_open(host, port)
    return Health("spark-connect", ok, f"{cfg.spark.connect_url} {'accepting' if ok else 'not answering'}")


def mlflow_command(cfg: LooplineConfig) -> list[str]:
    artifacts = Path(resolve_uri(cfg.mlflow.artifact_uri))
    artifacts.mkdir(parents=True, exist_ok=True)
    backend = resolve_uri(cfg.mlflow.tracking_uri)
    if backend.startswith("sqlite:///"):
        Path(backend.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return [*mlflow_server(cfg, backend), "--default-artifact-root", str(artifacts)]


def mlflow_server(cfg: LooplineConfig, backend: str) -> list[str]:
    """``mlflow server`` behind MLflow's basic-auth app on the configured UI address, with one worker and
    ``backend`` as its store; each profile adds how artifacts are stored."""
    host, port = host_port(cfg.mlflow.ui_url, 5000)
    command = [str(venv_bin() / "mlflow"), "server", "--host", host, "--port", str(port), "--workers", "1"]
    return [*command, "--app-name", "basic-auth", "--backend-store-uri", backend]


def mlflow_auth_config(users_db: str, admin_password: str) -> Path:
    """The basic-auth app's settings (mode 0600): its users in ``users_db``, new users may only read."""
    path = state_dir() / "mlflow-auth.ini"
    write_private(
        path,
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {users_db}\n"
        "admin_username = admin\n"
        f"admin_password = {admin_password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
    )
    return path


def mlflow_auth_env(env: Mapping[str, str], keys: Mapping[str, str], auth_ini: Path) -> dict[str, str]:
    """The tracking server's environment: its auth settings file and the secret that signs its sessions."""
    secret = keys["MLFLOW_FLASK_SECRET"]
    return {**env, "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": secret}


def start_embedded_services(cfg: LooplineConfig, env: dict[str, str], echo: Callable[[str], None]) -> None:
    """Spark Connect (token) and the MLflow UI (basic auth) of the embedded profile. Tasks of this profile use
    the tracking store directly (``mlflow.tracking_uri``); the server is the people's way in."""
    from loopline.cluster import service_environment

    keys = stack_secrets()
    services = service_environment(env)  # no Airflow connection or key for a non-Airflow process
    if running_pid("spark-connect") is None:
        echo("spark-connect: starting (token authentication)")
        token = {"SPARK_CONNECT_AUTHENTICATE_TOKEN": keys["SPARK_TOKEN"]}
        spawn("spark-connect", spark_command(cfg), {**services, **token})
    if running_pid("mlflow") is None:
        echo("mlflow: starting (basic auth)")
        users = Path(resolve_uri(cfg.mlflow.artifact_uri)).parent / "users.db"
        users.parent.mkdir(parents=True, exist_ok=True)
        auth_ini = mlflow_auth_config(f"sqlite:///{users}", keys["MLFLOW_ADMIN_PASSWORD"])
        spawn("mlflow", mlflow_command(cfg), mlflow_auth_env(services, keys, auth_ini))


def mlflow_login_hint() -> str:
    """Where a person finds the MLflow UI's login (never the password itself: it would land in logs)."""
    return f"(user admin, password MLFLOW_ADMIN_PASSWORD in {state_dir() / 'secrets.json'})"


def mlflow_health(cfg: LooplineConfig) -> Health:
    ok, body = http_ok(f"{cfg.mlflow.ui_url.rstrip('/')}/health")
    return Health("mlflow", ok, f"{cfg.mlflow.ui_url} {body.strip()[:60]}")


def airflow_health() -> Health:
    ok, body = http_ok(f"http://127.0.0.1:{AIRFLOW_PORT}/api/v2/monitor/health")
    if not ok:
        return Health("airflow", False, f"http://127.0.0.1:{AIRFLOW_PORT} {body[:120]}")
    report = json.loads(body)
    parts = {name: report.get(name, {}).get("status") for name in ("metadatabase", "scheduler", "triggerer")}
    parts["dag_processor"] = report.get("dag_processor", {}).get("status")
    healthy = all(status == "healthy" for status in parts.values())
    detail = ", ".join(f"{name}={status}" for name, status in parts.items())
    return Health("airflow", healthy, f"http://127.0.0.1:{AIRFLOW_PORT} {detail}")


def airflow_cli(args: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``airflow <args>`` with the stack's environment."""
    return subprocess.run([str(venv_bin() / "airflow"), *args], env=env, capture_output=True, text=True, check=check)


def admin_password(home: Path | None = None) -> str | None:
    """The generated password of the ``admin`` user of the local Airflow UI (of the stack in ``home``)."""
    generated = (home or loopline_home()) / "airflow" / "simple_auth_manager_passwords.json.generated"
    if not generated.exists():
        return None
    return json.loads(generated.read_text()).get("admin")


class AirflowApi:
    """The local Airflow's REST API (``/api/v2``) as the ``admin`` user.

    What the demo asks many times (the state of runs) goes here, not to the CLI: each ``airflow`` CLI
    process costs about 3 CPU seconds, which a 2-core machine otherwise spends on the backfill it watches.
    """

    def __init__(
        self,
        base: str | None = None,
        home: Path | None = None,
        timeout: float = 30.0,
        *,
        user: str = "admin",
        password: str | None = None,
    ) -> None:
        self.base = (base or f"http://127.0.0.1:{AIRFLOW_PORT}").rstrip("/")
        self.home = home
        self._token: str | None = None
        self.timeout = timeout
        self.user, self.password = user, password  # default: admin, with the stack's generated password

    @classmethod
    def for_env(cls, env: dict[str, str]) -> AirflowApi:
        """The API of the stack that ``env`` (a ``stack_environment``) talks to."""
        port = env.get("LOOPLINE_AIRFLOW_PORT") or str(AIRFLOW_PORT)
        home = Path(env["LOOPLINE_HOME"]) if env.get("LOOPLINE_HOME") else None
        return cls(f"http://127.0.0.1:{port}", home)

    def _login(self) -> str:
        password = self.password or admin_password(self.home)
        if password is None:
            raise RuntimeError(
                f"no admin password under {(self.home or loopline_home()) / 'airflow'}: is the stack up?"
            )
        body = json.dumps({"username": self.user, "password": password}).encode()
        request = urllib.request.Request(  # noqa: S310 - the stack's own loopback server
            f"{self.base}/auth/token", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
            return json.loads(response.read())["access_token"]

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        """One call; logs in first, and again once if the token has expired."""
        for attempt in (1, 2):
            self._token = self._token or self._login()
            request = urllib.request.Request(  # noqa: S310 - loopback
                f"{self.base}{path}",
                method=method,
                data=None if body is None else json.dumps(body).encode(),
                headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                    return json.loads(response.read() or b"{}")
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and attempt == 1:
                    self._token = None
                    continue
                detail = exc.read().decode(errors="replace")[:500]
                raise RuntimeError(f"Airflow API {method} {path}: HTTP {exc.code} {detail}") from exc
        raise AssertionError("unreachable")

    def dag_runs(self, dag_id: str) -> list[dict]:
        """Every run of ``dag_id`` (all pages), each with ``run_id`` as the CLI names it."""
        runs: list[dict] = []
        while True:
            page = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100&offset={len(runs)}&order_by=id")
            runs += [{**run, "run_id": run["dag_run_id"]} for run in page["dag_runs"]]
            if not page["dag_runs"] or len(runs) >= page["total_entries"]:
                return runs

    def dag_ids(self) -> set[str]:
        """The DAGs the dag-processor has parsed (the first 100, more than this project has)."""
        return {dag["dag_id"] for dag in self.request("GET", "/api/v2/dags?limit=100")["dags"]}

    def dag(self, dag_id: str) -> dict:
        return self.request("GET", f"/api/v2/dags/{dag_id}")

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def pending_approvals(self, dag_id: str) -> list[dict]:
        """Human-in-the-loop tasks of ``dag_id`` waiting for an answer (the UI's Required actions).

        Only tasks already parked in ``awaiting_input``: an answer recorded while the task is still writing its
        request is stored but does not resume it."""
        page = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/~/hitlDetails?limit=100")
        return [
            detail
            for detail in page["hitl_details"]
            if not detail.get("response_received")
            and (detail.get("task_instance") or {}).get("state") == "awaiting_input"
        ]

    def answer(self, detail: dict, option: str) -> dict:
        """Answer one human-in-the-loop task (``Approve`` / ``Reject`` for an approval) as this API's user."""
        ti = detail["task_instance"]
        path = (
            f"/api/v2/dags/{ti['dag_id']}/dagRuns/{ti['dag_run_id']}/taskInstances/{ti['task_id']}/"
            f"{ti.get('map_index', -1)}/hitlDetails"
        )
        return self.request("PATCH", path, {"chosen_options": [option]})

    def trigger(self, dag_id: str, run_id: str, conf: dict) -> None:
        """A manual run now (no logical date, as ``airflow dags trigger`` makes in Airflow 3)."""
        self.request(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        )


# ---------------------------------------------------------------------------------------------------------
# up / down / status.


def saved_profile() -> str | None:
    """The profile of the stack ``up`` last started in this home, if any."""
    path = state_dir() / "profile"
    return path.read_text().strip() if path.exists() else None


def _choose_profile(profile: str | None) -> str:
    saved = saved_profile()
    chosen = profile or saved or EMBEDDED
    if chosen not in PROFILES:
        raise ValueError(f"unknown stack profile {chosen!r}: choose one of {', '.join(PROFILES)}")
    running = [name for name in all_components() if running_pid(name)]
    if saved and saved != chosen and running:
        raise RuntimeError(
            f"a {saved} stack is running in {loopline_home()} ({', '.join(running)}): "
            f"run `loopline down` first, or use another LOOPLINE_HOME"
        )
    return chosen


def all_components() -> list[str]:
    """Every supervised process of either profile, in the order ``down`` stops them (Airflow first)."""
    from loopline import cluster

    return [
        *AIRFLOW_COMPONENTS,
        *cluster.WORKERS,
        "mlflow",
        "spark-connect",
        *cluster.SPARK_WORKERS,
        "spark-master",
        "s3",
        "redis",
    ]


def up(
    cfg: LooplineConfig | None = None, echo: Callable[[str], None] = print, profile: str | None = None
) -> list[Health]:
    """Start every component of the profile that is not already running, then wait until each is healthy."""
    from loopline import cluster

    profile = _choose_profile(profile)
    home = loopline_home()
    home.mkdir(parents=True, exist_ok=True)
    (state_dir() / "profile").write_text(profile)

    tcp_port = cluster.Ports.from_env().postgres
    pg = start_postgres(tcp_port)
    echo(f"postgres: embedded PostgreSQL on socket {pg.host} and 127.0.0.1:{tcp_port} (password)")
    env = stack_environment(cfg or get_config(), pg, profile)
    cfg = load_config(environ=env) if profile == CLUSTER else (cfg or get_config())
    applied = migrate_embedded(cfg, pg)
    echo(
        f"postgres: schema {cfg.postgres.schema_} at {db_latest()}"
        + (f" (applied {', '.join(applied)})" if applied else "")
    )
    echo(f"postgres: {postgres_login_hint(cfg, tcp_port)}")
    if POSTGRES_CONN_VAR in os.environ and profile == EMBEDDED:
        echo(
            f"postgres: analysts' tables go to the configured connection in {POSTGRES_CONN_VAR}: "
            f"migrate it with `loopline migrate` (AIRFLOW_CONN_{cfg.postgres.owner_conn_id.upper()} as the owner)"
        )
    for folder in (cfg.storage.landing_uri, cfg.storage.lake_uri, cfg.storage.reports_uri):
        if "://" not in resolve_uri(folder):
            Path(resolve_uri(folder)).mkdir(parents=True, exist_ok=True)

    if profile == CLUSTER:
        cluster.start(cfg, pg, env, echo)
    else:
        start_embedded_services(cfg, env, echo)
    if not any(running_pid(name) for name in AIRFLOW_COMPONENTS):
        echo("airflow: migrating the metadata database")
        airflow_cli(["db", "migrate"], env)
        airflow_cli(["pools", "set", cfg.spark.pool, str(cfg.spark.pool_slots), "Spark jobs"], env)
        airflow_cli(["pools", "set", cfg.training.pool, str(cfg.training.pool_slots), "Trainings (GPUs)"], env)
    for name, args in AIRFLOW_COMPONENTS.items():
        if running_pid(name) is None:
            echo(f"{name}: starting")
            spawn(name, [str(venv_bin() / "airflow"), *args], env)
    if profile == CLUSTER:
        cluster.start_workers(env, echo)

    wait_until(lambda: spark_health(cfg).healthy, 180, "Spark Connect", log_file("spark-connect"))
    wait_until(lambda: mlflow_health(cfg).healthy, 120, "MLflow", log_file("mlflow"))
    wait_until(lambda: airflow_health().healthy, 180, "Airflow", log_file("airflow-scheduler"))
    _write_env_file(env)
    return status(cfg)


def db_latest() -> str:
    from loopline import db

    return db.latest_version()


def _write_env_file(env: dict[str, str]) -> None:
    """Write the stack's environment for shells: ``source .loopline/stack/env.sh`` then use ``airflow``."""
    keys = sorted(k for k in env if k.startswith(("AIRFLOW", "LOOPLINE", "SPARK_HOME", "PYSPARK")))
    lines = [f"export {key}={_shell_quote(env[key])}" for key in keys]
    lines.append(f'export PATH="{venv_bin()}:$PATH"')
    # mode 0600: in the cluster profile the connections carry the generated passwords
    write_private(state_dir() / "env.sh", "\n".join(lines) + "\n")


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def shell_environment(home: Path, env: dict[str, str]) -> dict[str, str]:
    """``env`` plus the environment of the stack in ``home`` (connections, metadata DB), as ``source env.sh``
    gives it to a shell: what a process outside the stack needs to run ``airflow`` against it."""
    out = dict(env)
    for line in (home / "stack" / "env.sh").read_text().splitlines():
        if line.startswith("export ") and "=" in line and not line.startswith("export PATH="):
            name, _, value = line.removeprefix("export ").partition("=")
            out[name] = value[1:-1].replace("'\"'\"'", "'")
    return out


def down(echo: Callable[[str], None] = print) -> None:
    """Stop what ``up`` started, Airflow first so no task starts against a stopping service."""
    for name in all_components():
        if stop_process(name):
            echo(f"{name}: stopped")
        elif name in (*AIRFLOW_COMPONENTS, "mlflow", "spark-connect"):
            echo(f"{name}: was not running")
    echo(f"postgres: {'stopped' if stop_postgres() else 'not started by the stack'}")


def status(cfg: LooplineConfig | None = None) -> list[Health]:
    """Each component's health, as reported by the component itself."""
    report = [airflow_health(), spark_health(cfg or get_config()), postgres_health()]
    if saved_profile() == CLUSTER:
        from loopline import cluster

        if embedded_pg() is None:  # stopped: nothing else to ask
            return [*report, Health("cluster", False, "not started: loopline up --profile cluster")]
        env = stack_environment(cfg or get_config(), embedded_pg(), CLUSTER)
        cfg = load_config(environ=env)
        return [*report, mlflow_health(cfg), *cluster.health(cfg)]
    return [*report, mlflow_health(cfg or get_config())]

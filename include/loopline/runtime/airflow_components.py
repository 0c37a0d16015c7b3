"""Airflow as the local stack runs it: its components as separate processes, their environment (dev
connections and variables, settings, OpenLineage), the health endpoint and the ``airflow`` CLI."""

from __future__ import annotations

import json
import os
import string
import subprocess
from collections.abc import Mapping
from pathlib import Path

from loopline.config import LooplineConfig, loopline_home, repo_root, resolve_uri
from loopline.package_data import package_path
from loopline.runtime.credentials import stack_secrets
from loopline.runtime.postgres import POSTGRES_CONN_VAR, PgAddress
from loopline.runtime.supervisor import Health, host_port, http_ok, venv_bin

AIRFLOW_PORT = int(os.environ.get("LOOPLINE_AIRFLOW_PORT", "8080"))


DEV_ENV_FILE = package_path("config", "dev", "airflow.env")


# What `airflow standalone` runs, as separate processes: the scheduler and triggerer skip their log
# servers, which would listen on every interface; the api-server reads task logs from the shared folder.
AIRFLOW_COMPONENTS = {
    "airflow-api-server": ["api-server"],
    "airflow-scheduler": ["scheduler", "--skip-serve-logs"],
    "airflow-dag-processor": ["dag-processor"],
    "airflow-triggerer": ["triggerer", "--skip-serve-logs"],
}


def parallelism() -> int:
    """Airflow task parallelism sized to the machine: two task slots per core, at least four."""
    return max(4, 2 * (os.cpu_count() or 2))


# The heavy libraries the tasks import, loaded once into the LocalExecutor's forkserver: every worker and
# every task process forked from it inherits them instead of importing them again (GX alone takes seconds
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
    # drift_monitor's detector: torch, transformers and scikit-learn behind it (tens of seconds a night otherwise)
    "alibi_detect.cd",
)


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

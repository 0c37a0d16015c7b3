"""The embedded PostgreSQL (pgserver): Airflow's metadata database and, unless a connection is configured, the
analysts' ``loopline`` database, with its roles and migrations."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from loopline.config import LooplineConfig, loopline_home
from loopline.runtime.credentials import stack_secrets
from loopline.runtime.supervisor import Health, state_dir

POSTGRES_CONN_VAR = "AIRFLOW_CONN_LOOPLINE_POSTGRES"


@dataclass(frozen=True)
class PgAddress:
    """Where the embedded PostgreSQL listens: its Unix socket folder, and the port (the socket's name)."""

    host: str
    port: int = 5432


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

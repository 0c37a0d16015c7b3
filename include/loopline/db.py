"""Postgres side of Loopline: versioned DDL from ``include/sql`` and small typed helpers.

Migrations are plain SQL files ``V<NNN>__<name>.sql`` applied in order, each in its own transaction and
recorded in ``<schema>.schema_migrations``; an advisory lock keeps two deployers from racing. The only
thing substituted into SQL text is ``${schema}``, the config's schema name, which the config loader has
already validated as a plain identifier; values always travel as query parameters.

Least privilege: three roles, named in the config (``postgres.owner_role``, ``loader_role``, ``analyst_role``).

- :func:`bootstrap`, run once by a superuser (it becomes the owner to hand it the schema), creates or
  updates the three login roles with their passwords and makes the owner own the schema and everything in it.
- :func:`migrate` runs the DDL as the owner, at deploy time only (``loopline up``, ``loopline migrate``, the
  compose ``predictions-migrate`` service), then re-applies the privileges (:func:`grant_statements`) in the
  same transaction, so a table a new migration adds is covered without a code change.
- The loader may add to the :data:`APPEND_ONLY` evidence but not rewrite it.
- The loader (the role Airflow's tasks log in as) owns nothing and may not create anything: DML on the
  schema's tables (also future ones, through the owner's default privileges), USAGE on its sequences, and
  only SELECT on ``schema_migrations``. Tasks call :func:`require_current` instead of migrating.
- The analyst reads :data:`ANALYST_RELATIONS` and nothing else.
"""

from __future__ import annotations

import contextlib
import re
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopline.package_data import package_path

SQL_DIR = package_path("sql")
_VERSION = re.compile(r"^V(\d{3})__[a-z0-9_]+\.sql$")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_LOCK_KEY = 0x10_0915  # advisory lock id for migrations


# What analysts may read (SELECT only): the scores (the challenger's shadow scores too, for the comparison
# before a promotion), the runs that produced them, the model history and the monitoring tables (docs/
# analysts.md). Anything else (schema_migrations, model_artifact_digests, a table a future migration adds) stays
# unreadable until it is listed here; a relation listed that no migration has created yet is skipped.
ANALYST_RELATIONS = (
    "transaction_scores",
    "transaction_scores_shadow",
    "latest_scores",
    "scoring_runs",
    "champion_by_day",
    "model_alias_history",
    "drift_runs",
    "drift_reports",
    "model_performance",
    "retraining_decisions",
    "daily_alerts",
    "model_performance_slices",
    "scheduled_retrainings",
    "shadow_evaluations",
    "promotion_requests",
    "backfill_runs",
    "stale_days",
    "ingest_runs",
)
# The loader's one read-only table: it checks the schema's version there, it never records one.
LEDGER = "schema_migrations"
# Evidence the loader may add to but never rewrite: the artifacts' digests (rewriting one would bless a
# tampered file) and the alias history, of which it may only move a row's ``state`` (pending -> applied).
APPEND_ONLY = {"model_artifact_digests": (), "model_alias_history": ("state",)}


class SchemaOutdatedError(RuntimeError):
    """The database's schema is behind the code's migrations: someone has to run ``loopline migrate``."""


@dataclass(frozen=True)
class Roles:
    """The predictions database's roles: who migrates, who loads, who reads."""

    owner: str
    loader: str
    analyst: str
    # the one schema where the loader may create tables: Optuna's study storage (training.search), which
    # creates and upgrades its own tables; None leaves it out
    search_schema: str | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> Roles:
        pg = cfg.postgres
        return cls(pg.owner_role, pg.loader_role, pg.analyst_role, pg.search_schema)

    def __post_init__(self) -> None:
        for name in (self.owner, self.loader, self.analyst, self.search_schema or "x"):
            if not _IDENTIFIER.match(name):
                raise ValueError(f"role or schema {name!r} is not a plain lower-case identifier")
        if len({self.owner, self.loader, self.analyst}) != 3:
            raise ValueError(f"owner, loader and analyst roles must differ: {self}")


def migration_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    """The versioned SQL files in order; a misnamed file is an error, not silently skipped."""
    files = sorted(p for p in sql_dir.glob("*.sql"))
    bad = [p.name for p in files if not _VERSION.match(p.name)]
    if bad:
        raise ValueError(f"SQL files must be named V<NNN>__<name>.sql: {bad}")
    return files


def version_of(path: Path) -> str:
    """``V006`` for ``V006__drift_segments.sql``."""
    return path.name.split("__")[0]


def latest_version(sql_dir: Path = SQL_DIR) -> str:
    """The version the code expects: the newest migration file's (computed, so a new file needs no edit)."""
    return version_of(migration_files(sql_dir)[-1])


def current_version(conn: Any, schema: str) -> str | None:
    """The newest version recorded in the schema's ledger; None when the schema or the ledger is missing."""
    _check_identifier(schema)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.{LEDGER}",))
        if not cur.fetchone()[0]:
            return None
        cur.execute(f"SELECT max(version) FROM {schema}.{LEDGER}")  # noqa: S608 - validated identifier
        return cur.fetchone()[0]


def require_current(conn: Any, schema: str, sql_dir: Path = SQL_DIR) -> str:
    """Fail with what to do unless every migration of ``include/sql`` is applied; returns the version.

    What load tasks call instead of migrating: they log in as the loader, which may not run DDL. Only
    reads, and leaves the connection's transaction as it found it (rolled back when it opened one)."""
    expected = latest_version(sql_dir)
    # a transaction this call opens is rolled back after; one the caller had open is left alone
    status = getattr(getattr(conn, "info", None), "transaction_status", 0)
    opened = not getattr(conn, "autocommit", True) and int(status) == 0
    try:
        found = current_version(conn, schema)
        missing = []
        if found is not None:
            with conn.cursor() as cur:
                cur.execute(f"SELECT version FROM {schema}.{LEDGER}")  # noqa: S608 - validated identifier
                done = {row[0] for row in cur.fetchall()}
            missing = [version_of(p) for p in migration_files(sql_dir) if version_of(p) not in done]
    finally:
        if opened:
            conn.rollback()
    if found is None:
        raise SchemaOutdatedError(
            f"database schema {schema!r} is not migrated (no {schema}.{LEDGER}), code expects {expected}: "
            "run `loopline migrate`"
        )
    if missing:
        gap = f" (missing {', '.join(missing)})" if any(version < found for version in missing) else ""
        raise SchemaOutdatedError(f"database schema at {found}, code expects {expected}{gap}: run `loopline migrate`")
    return found


@contextlib.contextmanager
def _transaction(conn: Any) -> Iterator[None]:
    """One transaction on a DB-API connection, whatever its autocommit mode: committed, or rolled back on error."""
    previous_autocommit = conn.autocommit
    conn.autocommit = False
    try:
        yield
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    finally:
        conn.autocommit = previous_autocommit


def _check_identifier(name: str) -> None:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a plain lower-case identifier")


def render(path: Path, schema: str) -> str:
    _check_identifier(schema)
    return string.Template(path.read_text(encoding="utf-8")).substitute(schema=schema)


def migrate(conn: Any, schema: str, sql_dir: Path = SQL_DIR, roles: Roles | None = None) -> list[str]:
    """Apply pending migrations on a DB-API (psycopg2 or psycopg) connection; returns the versions applied now.

    Run it as the owner role. With ``roles``, :func:`grant_statements` follow in the same transaction, so the loader
    and the analyst see every table of the new version the moment it commits."""
    applied_now: list[str] = []
    with _transaction(conn), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        if roles is not None:
            # whoever connected (the owner, or an administrator), the objects belong to the owner; the
            # loader cannot become it and fails here, before any DDL
            cur.execute(f"SET LOCAL ROLE {roles.owner}")
        cur.execute(render(migration_files(sql_dir)[0], schema))  # creates the schema and the ledger
        cur.execute(f"SELECT version FROM {schema}.schema_migrations")  # noqa: S608 - validated identifier
        done = {row[0] for row in cur.fetchall()}
        for path in migration_files(sql_dir):
            version = path.name.split("__")[0]
            if version in done:
                continue
            cur.execute(render(path, schema))
            cur.execute(
                f"INSERT INTO {schema}.schema_migrations (version) VALUES (%s)",  # noqa: S608
                (version,),
            )
            applied_now.append(version)
        if roles is not None:
            for statement in grant_statements(schema, roles) + search_schema_statements(roles):
                cur.execute(statement)
    return applied_now


def search_schema_statements(roles: Roles) -> list[str]:
    """The search schema, owned by the owner, where the loader may create (Optuna's tables) and the analyst
    sees nothing; run as the owner, idempotent."""
    if roles.search_schema is None:
        return []
    search = roles.search_schema
    return [
        f"CREATE SCHEMA IF NOT EXISTS {search} AUTHORIZATION {roles.owner}",
        f"REVOKE ALL ON SCHEMA {search} FROM PUBLIC, {roles.analyst}",
        f"GRANT USAGE, CREATE ON SCHEMA {search} TO {roles.loader}",
    ]


def grant_statements(schema: str, roles: Roles) -> list[str]:
    """The loader's and the analyst's privileges, as the owner grants them (idempotent; stale grants revoked).

    The loader gets DML on every table of the schema, now and (default privileges of the owner) in future
    migrations, USAGE on the sequences, only SELECT on the ledger, and no UPDATE or DELETE on the
    :data:`APPEND_ONLY` evidence (but the columns listed there). The analyst gets SELECT on the
    :data:`ANALYST_RELATIONS` that exist, and nothing else."""
    _check_identifier(schema)
    owner, loader, analyst = roles.owner, roles.loader, roles.analyst
    dml = "SELECT, INSERT, UPDATE, DELETE"
    statements = [
        f"GRANT USAGE ON SCHEMA {schema} TO {loader}, {analyst}",
        f"REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC, {loader}, {analyst}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM PUBLIC, {loader}, {analyst}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM PUBLIC, {loader}, {analyst}",
        f"GRANT {dml} ON ALL TABLES IN SCHEMA {schema} TO {loader}",
        f"REVOKE INSERT, UPDATE, DELETE ON {schema}.{LEDGER} FROM {loader}",
        f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {loader}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema} GRANT {dml} ON TABLES TO {loader}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema} GRANT USAGE ON SEQUENCES TO {loader}",
    ]
    for table, updatable in APPEND_ONLY.items():
        # only once a migration has made the table (a test's partial ledger may stop before it); identifiers
        # are validated or constants, never input
        relation = f"{schema}.{table}"
        actions = [f"EXECUTE 'REVOKE UPDATE, DELETE ON {relation} FROM {loader}';"]
        actions += [
            f"IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = '{schema}' "  # noqa: S608
            f"AND table_name = '{table}' AND column_name = '{column}') THEN "
            f"EXECUTE 'GRANT UPDATE ({column}) ON {relation} TO {loader}'; END IF;"
            for column in updatable
        ]
        body = " ".join(actions)
        statements.append(f"DO $$ BEGIN IF to_regclass('{relation}') IS NOT NULL THEN {body} END IF; END $$")
    # Only what exists: a view a later migration adds is granted by the migrate that creates it.
    statements.append(
        "DO $$ DECLARE name text; BEGIN FOREACH name IN ARRAY ARRAY["
        + ", ".join(f"'{relation}'" for relation in ANALYST_RELATIONS)
        + f"] LOOP IF to_regclass(format('%I.%I', '{schema}', name)) IS NOT NULL THEN "
        f"EXECUTE format('GRANT SELECT ON %I.%I TO {analyst}', '{schema}', name); END IF; END LOOP; END $$"
    )
    return statements


def bootstrap(conn: Any, cfg: Any, passwords: Mapping[str, str] | None = None, roles: Roles | None = None) -> Roles:
    """Create or update the three roles and give the owner the schema (run as an administrator, idempotent).

    ``passwords`` maps a role name to its password (a role without one is created without a password, so it
    can log in only where the server trusts the connection). The roles get no superuser, CREATEDB,
    CREATEROLE, replication or RLS bypass; the owner may create in the database (the schema, at first), the
    others may only connect. A schema that exists already (and every table and view in it) passes to the
    owner, so a database that an older Loopline migrated as another role is taken over in place."""
    roles = roles or Roles.from_config(cfg)
    schema = cfg.postgres.schema_
    _check_identifier(schema)
    passwords = passwords or {}
    with _transaction(conn), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        for role in (roles.owner, roles.loader, roles.analyst):
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(
                f"{verb} ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT"
            )
            if role in passwords:
                # the server renders the literal: the password never becomes part of Python-built SQL
                cur.execute("SELECT format('ALTER ROLE %%I PASSWORD %%L', %s::text, %s::text)", (role, passwords[role]))
                cur.execute(cur.fetchone()[0])
        cur.execute("SELECT current_database()")
        database = cur.fetchone()[0]
        cur.execute(
            "SELECT format('GRANT CONNECT, CREATE, TEMPORARY ON DATABASE %%I TO %%I', %s::text, %s::text)",
            (database, roles.owner),
        )
        cur.execute(cur.fetchone()[0])
        cur.execute(
            "SELECT format('GRANT CONNECT ON DATABASE %%I TO %%I, %%I', %s::text, %s::text, %s::text)",
            (database, roles.loader, roles.analyst),
        )
        cur.execute(cur.fetchone()[0])
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {roles.owner}")
        cur.execute(f"ALTER SCHEMA {schema} OWNER TO {roles.owner}")
        cur.execute(
            "SELECT format('ALTER %%s %%I.%%I OWNER TO %%I', CASE c.relkind WHEN 'v' THEN 'VIEW' "
            "WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END, n.nspname, c.relname, %s::text) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm') AND pg_get_userbyid(c.relowner) <> %s",
            (roles.owner, schema, roles.owner),
        )
        for (statement,) in cur.fetchall():
            cur.execute(statement)
    return roles

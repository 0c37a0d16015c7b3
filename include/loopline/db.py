"""Postgres side of Loopline: versioned DDL from ``include/sql`` and small typed helpers.

Migrations are plain SQL files ``V<NNN>__<name>.sql`` applied in order, each in its own transaction and
recorded in ``<schema>.schema_migrations``; an advisory lock keeps two deployers from racing. The only
thing substituted into SQL text is ``${schema}``, the config's schema name, which the config loader has
already validated as a plain identifier; values always travel as query parameters.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
_VERSION = re.compile(r"^V(\d{3})__[a-z0-9_]+\.sql$")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_LOCK_KEY = 0x10_0915  # advisory lock id for migrations


def migration_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    """The versioned SQL files in order; a misnamed file is an error, not silently skipped."""
    files = sorted(p for p in sql_dir.glob("*.sql"))
    bad = [p.name for p in files if not _VERSION.match(p.name)]
    if bad:
        raise ValueError(f"SQL files must be named V<NNN>__<name>.sql: {bad}")
    return files


def render(path: Path, schema: str) -> str:
    if not _IDENTIFIER.match(schema):
        raise ValueError(f"schema {schema!r} is not a plain lower-case identifier")
    return string.Template(path.read_text(encoding="utf-8")).substitute(schema=schema)


def migrate(conn: Any, schema: str, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply pending migrations on a DB-API (psycopg2) connection; returns the versions applied now."""
    applied_now: list[str] = []
    previous_autocommit = conn.autocommit
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
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
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    finally:
        conn.autocommit = previous_autocommit
    return applied_now

"""The one way a task opens the predictions database.

Tasks log in through the Airflow connection ``postgres.conn_id`` (the loader role) and never migrate: the schema
is applied once, at deploy time, by ``loopline migrate`` as the owner. Opening checks that the schema is at the
version this code needs, so a task on a stale database fails at once with the command that fixes it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from loopline.config import LooplineConfig, get_config


def connect(conn_id: str) -> Any:
    """A DB-API connection through the Airflow connection ``conn_id`` (the SQL provider's hook); the caller closes
    it. The predictions database, a PostgreSQL source and the owner's migrations all open theirs here."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return PostgresHook(postgres_conn_id=conn_id).get_conn()


def open_predictions_db(cfg: LooplineConfig | None = None) -> Any:
    """A connection to the predictions database, its schema checked current; the caller closes it."""
    from loopline import db

    cfg = cfg or get_config()
    conn = connect(cfg.postgres.conn_id)
    try:
        db.require_current(conn, cfg.postgres.schema_)
    except Exception:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def predictions_db(cfg: LooplineConfig | None = None) -> Iterator[Any]:
    """``open_predictions_db`` for one block: the connection is closed after it."""
    conn = open_predictions_db(cfg)
    try:
        yield conn
    finally:
        conn.close()

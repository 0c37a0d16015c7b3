"""Generated days as PostgreSQL source tables: what an operational database holding the transactions and the
labels looks like to Loopline (``loopline demo --source postgres``, the source tests).

:func:`write_days` loads the generator's landing files of each day into ``<schema>.transactions`` and
``<schema>.labels`` (the landing contract's columns as typed PostgreSQL columns, ``updated_at`` beside them),
replacing the day's rows (idempotent per day), and moves the loader's watermark (``<schema>.load_watermark``)
to the end of the last day loaded: the day is complete in the source. :func:`source_settings` is the
configuration that makes both inputs read from these tables (``sources`` in loopline.yaml, as environment
overrides), the watermark query included.

The functions take a DB-API connection (psycopg2 or psycopg 3) and know nothing of Airflow.
"""

from __future__ import annotations

import datetime as dt
import gzip
import re
from pathlib import Path
from typing import Any

from loopline.schemas import LABEL_COLUMNS, TRANSACTION_COLUMNS

# The landing contract's columns as the source's column types (timestamps with time zone: the extraction
# refuses naive ones).
TYPES = {
    "transaction_id": "text",
    "event_time": "timestamptz",
    "customer_id": "text",
    "merchant_id": "text",
    "merchant_category": "text",
    "amount": "numeric(14, 2)",
    "currency": "text",
    "channel": "text",
    "country": "text",
    "card_present": "boolean",
    "is_fraud": "smallint",
    "reported_at": "timestamptz",
}
COLUMNS = {"transactions": TRANSACTION_COLUMNS, "labels": LABEL_COLUMNS}
EVENT_TIME = {"transactions": "event_time", "labels": "reported_at"}
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


def _check(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a plain lower-case identifier")
    return name


def create_tables(conn: Any, schema: str, read_role: str | None = None) -> None:
    """Create the schema, both tables and the watermark table if absent; grant ``read_role`` read access."""
    _check(schema)
    with conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for kind, columns in COLUMNS.items():
            ddl = ", ".join(f"{c} {TYPES[c]}" for c in columns)
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {schema}.{kind} ({ddl}, updated_at timestamptz NOT NULL DEFAULT now())"
            )
            cur.execute(f"CREATE INDEX IF NOT EXISTS {kind}_{EVENT_TIME[kind]} ON {schema}.{kind} ({EVENT_TIME[kind]})")
        cur.execute(f"CREATE TABLE IF NOT EXISTS {schema}.load_watermark (loaded_through timestamptz NOT NULL)")
        if read_role is not None:
            _check(read_role)
            cur.execute(f"GRANT USAGE ON SCHEMA {schema} TO {read_role}")
            cur.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {read_role}")
    conn.commit()


def _copy(cur: Any, statement: str, text: str) -> None:
    """COPY ... FROM STDIN with either driver."""
    if hasattr(cur, "copy_expert"):  # psycopg2
        import io

        cur.copy_expert(statement, io.StringIO(text))
        return
    with cur.copy(statement) as copy:  # psycopg 3
        copy.write(text)


def load_day(conn: Any, schema: str, kind: str, folder: Path, ds: dt.date) -> int:
    """Replace ``kind``'s rows of ``ds`` (by event time) with the drop files in ``folder``; returns rows loaded.

    One transaction: a reader sees the day's old rows or its new ones, never a half-loaded day."""
    _check(schema)
    start = dt.datetime.combine(ds, dt.time(), tzinfo=dt.UTC)
    event = EVENT_TIME[kind]
    columns = ", ".join(COLUMNS[kind])
    rows = 0
    with conn.cursor() as cur:
        cur.execute(
            f"DELETE FROM {schema}.{kind} WHERE {event} >= %s AND {event} < %s",  # noqa: S608 (checked identifiers)
            (start, start + dt.timedelta(days=1)),
        )
        for path in sorted(folder.glob("part-*")):
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", encoding="utf-8", newline="") as handle:
                text = handle.read()
            rows += max(text.count("\n") - 1, 0)
            _copy(cur, f"COPY {schema}.{kind} ({columns}) FROM STDIN WITH (FORMAT csv, HEADER true)", text)
    conn.commit()
    return rows


def write_days(conn: Any, schema: str, landing_root: Path, read_role: str | None = None) -> dict[str, int]:
    """Load every generated day under ``landing_root`` (``<kind>/ds=<day>/``) into the source tables, then move
    the watermark to the end of the last day; returns the rows loaded per kind."""
    create_tables(conn, schema, read_role)
    loaded = {kind: 0 for kind in COLUMNS}
    last: dt.date | None = None
    for kind in COLUMNS:
        for folder in sorted((Path(landing_root) / kind).glob("ds=*")):
            ds = dt.date.fromisoformat(folder.name.removeprefix("ds="))
            loaded[kind] += load_day(conn, schema, kind, folder, ds)
            last = ds if last is None else max(last, ds)
    if last is not None:
        end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
        with conn.cursor() as cur:
            cur.execute(f"DELETE FROM {schema}.load_watermark")  # noqa: S608 (checked identifier)
            cur.execute(f"INSERT INTO {schema}.load_watermark VALUES (%s)", (end,))  # noqa: S608
        conn.commit()
    return loaded


def source_settings(schema: str, conn_id: str) -> dict[str, str]:
    """The configuration (environment overrides of ``sources``) that reads both inputs from the tables of
    :func:`write_days`: each day closes once the loader's watermark has reached its end."""
    _check(schema)
    watermark = f"SELECT max(loaded_through) FROM {schema}.load_watermark"  # noqa: S608 (checked identifier)
    return {
        f"LOOPLINE__SOURCES__{kind.upper()}": (
            f"{{kind: postgres, conn_id: {conn_id}, table: {schema}.{kind}, event_time_column: {EVENT_TIME[kind]}, "
            f"watermark_query: '{watermark}', allowed_lateness_minutes: 0}}"
        )
        for kind in COLUMNS
    }

"""The day's ingest accounting in Postgres (``ingest_runs``): what the model-health page charts as daily volumes
and quarantine rates.

The ingest's row accounting (rows read, published, dropped as duplicates and quarantined, per reason) is the
ingest result :func:`spark_jobs.ingest.run` returns; the lake keeps only the published partitions. Once the raw
layer of a day is committed, :func:`record` writes that accounting as the day's row, through the loader's
connection. Recording comes after the publish, never before and never in the same step: a Postgres outage
leaves the day published in the lake and only its row missing (``feature_pipeline.record_ingest`` retries on
its own; a rerun of the day writes it again).

Idempotent per ``ds``: an upsert keyed on the day that only ever moves forward (a row of a newer raw version
replaces the day's row, one of an older version, a late retry of a superseded run, changes nothing).
Nothing here knows Airflow.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

TABLE = "ingest_runs"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_COLUMNS = (
    "ds",
    "raw_version",
    "rows_read",
    "rows_published",
    "duplicates_dropped",
    "rows_quarantined",
    "quarantine_rate",
    "quarantined_by_reason",
    "files",
    "files_quarantined",
    "label_rows_read",
    "label_rows_published",
    "label_rows_quarantined",
    "label_quarantined_by_reason",
    "published_by",
    "airflow_run_id",
)


def row(ingested: dict[str, Any], *, published_by: str, airflow_run_id: str | None = None) -> dict[str, Any]:
    """The ``ingest_runs`` row of an ingest result (``spark_jobs.ingest.run``'s dict, as it travels in XCom)."""
    tx, labels = ingested["transactions"], ingested.get("labels") or {}
    read = int(tx["rows_read"])
    quarantined = int(tx["rows_quarantined"])
    return {
        "ds": dt.date.fromisoformat(str(ingested["ds"])),
        "raw_version": str(ingested["version"]),
        "rows_read": read,
        "rows_published": int(tx["rows_written"]),
        "duplicates_dropped": int(tx.get("duplicates_dropped", 0)),
        "rows_quarantined": quarantined,
        "quarantine_rate": quarantined / read if read else 0.0,
        "quarantined_by_reason": dict(tx.get("quarantined_by_reason") or {}),
        "files": int(tx.get("files", 0)),
        "files_quarantined": int(tx.get("files_quarantined", 0)),
        "label_rows_read": int(labels.get("rows_read", 0)),
        "label_rows_published": int(labels.get("rows_written", 0)),
        "label_rows_quarantined": int(labels.get("rows_quarantined", 0)),
        "label_quarantined_by_reason": dict(labels.get("quarantined_by_reason") or {}),
        "published_by": published_by,
        "airflow_run_id": airflow_run_id,
    }


def record(conn: Any, schema: str, values: dict[str, Any]) -> bool:
    """Upsert the day's row (one transaction, committed); True when written, False when the table already
    holds a newer raw version of the day (this row describes a superseded publish and is dropped)."""
    if not _IDENTIFIER.match(schema):
        raise ValueError(f"{schema!r} is not a plain lower-case SQL identifier")
    args = [json.dumps(values[c], sort_keys=True) if c.endswith("by_reason") else values[c] for c in _COLUMNS]
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS if c != "ds")
    sql = (
        f"INSERT INTO {schema}.{TABLE} ({', '.join(_COLUMNS)}, recorded_at) "  # noqa: S608 - validated identifier
        f"VALUES ({', '.join(['%s'] * len(_COLUMNS))}, now()) "
        f"ON CONFLICT (ds) DO UPDATE SET {updates}, recorded_at = now() "
        f"WHERE {TABLE}.raw_version <= EXCLUDED.raw_version"
    )
    # commit / rollback by hand: ``with conn`` would close a psycopg 3 connection (the range backfill's ledger's)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            written = cur.rowcount == 1
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    return written

"""Load one day of scores from the lake into Postgres: the whole day replaced in one transaction.

Inside a single transaction, serialised per table and day by an advisory lock: delete the day's rows, COPY
the new ones (CSV streamed from the Parquet partition by Arrow, never a row-by-row INSERT), check the count,
and upsert the day's row in ``scoring_runs``. Readers see the old day until the commit and the new day after
it; a rerun replaces the same rows; a crash anywhere in between rolls back to the old day.

Works on a psycopg 3 connection (what the postgres provider's hook returns with SQLAlchemy 2) and on psycopg2.
"""

from __future__ import annotations

import datetime as dt
import io
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from loopline.db import _IDENTIFIER

# Columns of transaction_scores / transaction_scores_shadow, in COPY order (as the scoring job writes them).
LOAD_COLUMNS: tuple[str, ...] = (
    "ds",
    "transaction_id",
    "customer_id",
    "merchant_id",
    "event_time",
    "amount_eur",
    "score",
    "decision",
    "threshold",
    "model_name",
    "model_version",
    "model_run_id",
    "scored_at",
    "reasons",
    "reason_method",
)
TABLES = {"champion": "transaction_scores", "challenger": "transaction_scores_shadow"}
CHUNK_ROWS = 50_000


class LoadError(RuntimeError):
    """The day could not be loaded; the previous rows of the day are untouched."""


@dataclass(frozen=True)
class ScoringRun:
    """The ``scoring_runs`` row of a day."""

    ds: dt.date
    role: str
    model_name: str
    model_version: int
    model_run_id: str
    threshold: float
    rows_flagged: int
    rows_explained: int
    score_seconds: float
    lake_uri: str
    airflow_run_id: str | None = None
    # The alert policy check of the day (loopline.thresholds.check_alert_rate); None before policies.
    threshold_policy: str | None = None
    expected_alert_rate: float | None = None
    alert_band_low: float | None = None
    alert_band_high: float | None = None
    alert_out_of_band: bool | None = None
    alert_note: str | None = None


def csv_chunks(table: Any, chunk_rows: int = CHUNK_ROWS) -> Iterator[bytes]:
    """The Arrow table's :data:`LOAD_COLUMNS` as CSV (no header) in chunks; nulls are empty, unquoted fields."""
    import pyarrow.csv as pacsv

    selected = table.select(list(LOAD_COLUMNS))
    options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
    for batch in selected.to_batches(max_chunksize=chunk_rows):
        buffer = io.BytesIO()
        pacsv.write_csv(batch, buffer, write_options=options)
        yield buffer.getvalue()


def _copy(cur: Any, sql: str, chunks: Iterator[bytes]) -> None:
    if hasattr(cur, "copy"):  # psycopg 3
        with cur.copy(sql) as copy:
            for chunk in chunks:
                copy.write(chunk)
        return
    cur.copy_expert(sql, _ChunkReader(chunks))  # psycopg2 reads a file-like object


class _ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (psycopg2's copy_expert wants a file)."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return b""
        if size is None or size < 0:
            size = len(self._pending)
        out, self._pending = self._pending[:size], self._pending[size:]
        return out


def load_day(
    conn: Any,
    schema: str,
    run: ScoringRun,
    table: Any,
    *,
    after_delete: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Replace ``run.ds`` in the role's scores table with the rows of Arrow ``table``, in one transaction.

    ``after_delete`` is a hook between the delete and the COPY (tests use it to crash there). Returns the
    counts and timing; raises :class:`LoadError` (after rolling back) when the rows do not fit the day.
    """
    if not _IDENTIFIER.match(schema):
        raise ValueError(f"schema {schema!r} is not a plain identifier")
    if run.role not in TABLES:
        raise ValueError(f"role must be one of {sorted(TABLES)}, not {run.role!r}")
    _check_rows(table, run.ds)
    target = f"{schema}.{TABLES[run.role]}"
    started = time.perf_counter()
    try:
        with conn.cursor() as cur:
            # One loader per table and day at a time; a second one waits, then replaces the day again.
            cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (zlib.crc32(target.encode()) >> 1, run.ds.toordinal()))
            cur.execute(f"DELETE FROM {target} WHERE ds = %s", (run.ds,))  # noqa: S608 - validated identifier
            deleted = cur.rowcount
            if after_delete is not None:
                after_delete()
            columns = ", ".join(LOAD_COLUMNS)
            _copy(cur, f"COPY {target} ({columns}) FROM STDIN WITH (FORMAT csv)", csv_chunks(table))
            cur.execute(f"SELECT count(*) FROM {target} WHERE ds = %s", (run.ds,))  # noqa: S608
            loaded = cur.fetchone()[0]
            if loaded != table.num_rows:
                raise LoadError(f"{target} ds={run.ds}: {loaded} rows after COPY, expected {table.num_rows}")
            seconds = time.perf_counter() - started
            cur.execute(
                f"""INSERT INTO {schema}.scoring_runs
                (ds, role, model_name, model_version, model_run_id, threshold, rows_scored, rows_flagged,
                 rows_explained, score_seconds, load_seconds, lake_uri, airflow_run_id, loaded_at,
                 threshold_policy, alert_rate, expected_alert_rate, alert_band_low, alert_band_high,
                 alert_out_of_band, alert_note)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now(), %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (ds, role) DO UPDATE SET
                  model_name = EXCLUDED.model_name, model_version = EXCLUDED.model_version,
                  model_run_id = EXCLUDED.model_run_id, threshold = EXCLUDED.threshold,
                  rows_scored = EXCLUDED.rows_scored, rows_flagged = EXCLUDED.rows_flagged,
                  rows_explained = EXCLUDED.rows_explained, score_seconds = EXCLUDED.score_seconds,
                  load_seconds = EXCLUDED.load_seconds, lake_uri = EXCLUDED.lake_uri,
                  airflow_run_id = EXCLUDED.airflow_run_id, loaded_at = now(),
                  threshold_policy = EXCLUDED.threshold_policy, alert_rate = EXCLUDED.alert_rate,
                  expected_alert_rate = EXCLUDED.expected_alert_rate, alert_band_low = EXCLUDED.alert_band_low,
                  alert_band_high = EXCLUDED.alert_band_high, alert_out_of_band = EXCLUDED.alert_out_of_band,
                  alert_note = EXCLUDED.alert_note, stale = false, stale_reason = NULL""",  # noqa: S608
                (
                    run.ds,
                    run.role,
                    run.model_name,
                    run.model_version,
                    run.model_run_id,
                    run.threshold,
                    loaded,
                    run.rows_flagged,
                    run.rows_explained,
                    run.score_seconds,
                    seconds,
                    run.lake_uri,
                    run.airflow_run_id,
                    run.threshold_policy,
                    run.rows_flagged / loaded if loaded else None,
                    run.expected_alert_rate,
                    run.alert_band_low,
                    run.alert_band_high,
                    run.alert_out_of_band,
                    run.alert_note,
                ),
            )
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    return {"ds": str(run.ds), "table": target, "deleted": deleted, "loaded": loaded, "load_seconds": seconds}


def _check_rows(table: Any, ds: dt.date) -> None:
    """Every row must belong to ``ds``: a stray day would be deleted by nobody and duplicated by reruns."""
    import pyarrow.compute as pc

    missing = [name for name in LOAD_COLUMNS if name not in table.column_names]
    if missing:
        raise LoadError(f"scores for ds={ds} lack column(s) {', '.join(missing)}")
    if table.num_rows and not pc.all(pc.equal(table["ds"], ds)).as_py():
        raise LoadError(f"scores partition for ds={ds} holds rows of other days; refusing to load it")

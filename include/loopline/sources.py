"""Sources other than the landing drop: a PostgreSQL table or query, or an object-store prefix per day, brought
one day at a time into the day's landing drop, so that the ingest, its quarantine and its gates are the same
for every source (:func:`extract_day`, :func:`copy_s3_day`).

:func:`extract_day` streams the day's rows (``event_time_column`` in ``[ds, ds + 1 day)`` UTC) through a
server-side cursor, ``fetch_rows`` at a time, never the whole table in memory, into gzip CSV files with the
landing contract's header, then replaces the day's drop folder as a whole and writes ``_SUCCESS`` last: a
re-extraction replaces the day (idempotent per ``ds``), and a failed or timed-out query leaves the previous
drop untouched. :func:`day_closed` is the sensor's condition: the watermark (by default the maximum event
time) has passed the end of the day plus the allowed lateness.

Rows that changed after an extraction (a late or updated row) are picked up by extracting and ingesting that
day again; the rows of a day are selected by event time, so the operator finds the days to rerun with
``SELECT DISTINCT date(<event_time_column>) FROM <table> WHERE updated_at > <last extraction>``.

The functions take a DB-API connection (``PostgresHook(conn_id).get_conn()`` in a task) and know nothing
of Airflow.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopline.config import PostgresSource, S3Source
from loopline.landing import MARKER
from loopline.schemas import LABEL_COLUMNS, TRANSACTION_COLUMNS

log = logging.getLogger(__name__)

CONTRACT: dict[str, tuple[str, ...]] = {"transactions": TRANSACTION_COLUMNS, "labels": LABEL_COLUMNS}
ROWS_PER_FILE = 1_000_000


class SourceError(RuntimeError):
    """A source could not give a day's rows (query failed, timed out, wrong columns or types); the message
    names the source and the day, and the day's landing drop was left as it was."""


@dataclass(frozen=True)
class Extracted:
    kind: str
    ds: str
    rows: int  # -1: copied files, rows not counted (the ingest counts them)
    files: list[str]
    folder: str


def _day_bounds(ds: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(ds, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def _sql(conn: Any) -> Any:
    """The ``sql`` composition module of ``conn``'s driver: psycopg 3 (what the postgres provider's hook returns
    with SQLAlchemy 2) or psycopg2; each driver accepts only its own composed queries."""
    if type(conn).__module__.startswith("psycopg2"):
        from psycopg2 import sql
    else:
        from psycopg import sql
    return sql


def _select(conn: Any, source: PostgresSource, kind: str) -> Any:
    """The day's query: ``query`` as configured, or the contract's columns of ``table`` composed from quoted
    identifiers (never string interpolation)."""
    sql = _sql(conn)
    if source.query is not None:
        return source.query
    event = sql.Identifier(source.event_time_column)
    return sql.SQL(
        "SELECT {columns} FROM {table} WHERE {event} >= %(start)s AND {event} < %(end)s ORDER BY {event}"
    ).format(
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in CONTRACT[kind]),
        table=sql.Identifier(*source.table.split(".")),  # type: ignore[union-attr]
        event=event,
    )


def _text(value: Any, column: str, where: str) -> str:
    """A value as the landing contract writes it."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise SourceError(f"{where}: column {column} is a timestamp without time zone; use timestamptz")
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def extract_day(conn: Any, source: PostgresSource, kind: str, ds: dt.date, landing_root: str) -> Extracted:
    """Extract ``kind``'s rows of ``ds`` from ``source`` into ``<landing_root>/<kind>/ds=<ds>/``.

    Raises :class:`SourceError` naming the source and the day; on any failure the day's existing drop is
    untouched. Timestamps must be ``timestamptz`` (written as ISO-8601 UTC); every other value is written as
    text and checked by the ingest like a landing file's.
    """
    where = f"postgres source {source.table or 'query'} ({kind}, ds={ds})"
    root = _local_root(landing_root, where)
    start, end = _day_bounds(ds)
    final = root / kind / f"ds={ds}"
    staging = root / kind / f".ds={ds}.extract-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    files: list[str] = []
    rows = 0
    try:
        with conn.cursor() as setup:  # SET takes no bound parameters (psycopg 3 binds on the server)
            setup.execute("SELECT set_config('statement_timeout', %s, false)", (str(source.timeout_seconds * 1000),))
        # A named cursor is a server-side cursor: rows arrive fetch_rows at a time.
        with conn.cursor(name=f"loopline_extract_{uuid.uuid4().hex[:8]}") as cur:
            cur.itersize = source.fetch_rows
            cur.execute(_select(conn, source, kind), {"start": start, "end": end})
            out, writer = None, None
            names: list[str] | None = None
            for record in cur:
                if names is None:
                    names = [d[0] for d in cur.description]
                    missing = [c for c in CONTRACT[kind] if c not in names]
                    if missing:
                        raise SourceError(f"{where}: the query returns no column(s) {', '.join(missing)}")
                    index = [names.index(c) for c in CONTRACT[kind]]
                if rows % ROWS_PER_FILE == 0:
                    if out is not None:
                        out.close()
                    path = staging / f"part-{len(files):05d}.csv.gz"
                    files.append(path.name)
                    out = io.TextIOWrapper(gzip.GzipFile(path, "wb", mtime=0), encoding="utf-8", newline="")
                    writer = csv.writer(out, lineterminator="\n")
                    writer.writerow(CONTRACT[kind])
                writer.writerow([_text(record[i], c, where) for i, c in zip(index, CONTRACT[kind], strict=True)])
                rows += 1
            if out is not None:
                out.close()
        conn.rollback()  # read-only: end the transaction (and the cursor) cleanly
        if not files:  # an empty day is a valid drop: a header-only file keeps the contract
            with gzip.open(staging / "part-00000.csv.gz", "wt", encoding="utf-8", newline="") as empty:
                csv.writer(empty, lineterminator="\n").writerow(CONTRACT[kind])
            files.append("part-00000.csv.gz")
    except SourceError:
        shutil.rmtree(staging, ignore_errors=True)
        _rollback(conn)
        raise
    except Exception as exc:  # the driver's errors: a failed query, a timeout, a lost connection
        shutil.rmtree(staging, ignore_errors=True)
        _rollback(conn)
        raise SourceError(f"{where}: extraction failed: {type(exc).__name__}: {str(exc).strip()}") from exc
    _replace_day(staging, final)
    log.info("%s: %d row(s) into %s", where, rows, final)
    return Extracted(kind, str(ds), rows, files, str(final))


def _local_root(landing_root: str, what: str) -> Path:
    if "://" in landing_root and not landing_root.startswith("file://"):
        raise SourceError(f"{what}: extraction into {landing_root} needs a local landing folder")
    return Path(landing_root.removeprefix("file://"))


def _replace_day(staging: Path, final: Path) -> None:
    """Replace the day's drop as a whole, then mark it complete: a reader sees the old drop (or none) until
    the new one is complete."""
    previous = final.with_name(f".{final.name}.replaced-{uuid.uuid4().hex[:8]}")
    marker = final / MARKER
    if marker.exists():
        marker.unlink()  # the old drop stops being complete before it moves away
    if final.exists():
        final.rename(previous)
    staging.rename(final)
    (final / MARKER).touch()
    shutil.rmtree(previous, ignore_errors=True)


def copy_s3_day(source: S3Source, kind: str, ds: dt.date, landing_root: str, conn_id: str | None = None) -> Extracted:
    """Copy the day's objects under ``source.prefix`` (``{ds}`` filled in) into the day's landing drop.

    The prefix must hold a ``_SUCCESS`` marker (the producer's "complete"); data objects are every object
    but the marker and hidden ones (``_`` or ``.`` names). Raises :class:`SourceError` naming the prefix and
    the day; the day's existing drop is untouched on failure.
    """
    from loopline import objectstore

    prefix = source.prefix.replace("{ds}", str(ds))
    where = f"s3 source {prefix} ({kind}, ds={ds})"
    root = _local_root(landing_root, where)
    bucket, key_prefix = objectstore.split(prefix + "/")
    final = root / kind / f"ds={ds}"
    staging = root / kind / f".ds={ds}.extract-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    files: list[str] = []
    try:
        with objectstore.s3(conn_id) as s3:
            keys = []
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix):
                keys += [item["Key"] for item in page.get("Contents", [])]
            names = {key[len(key_prefix) :]: key for key in keys if "/" not in key[len(key_prefix) :]}
            if MARKER not in names:
                raise SourceError(f"{where}: no {MARKER} marker: the day's export is not complete")
            for name, key in sorted(names.items()):
                if name.startswith(("_", ".")):
                    continue
                s3.download_file(bucket, key, str(staging / name))
                files.append(name)
    except SourceError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except Exception as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise SourceError(f"{where}: copy failed: {type(exc).__name__}: {str(exc).strip()}") from exc
    _replace_day(staging, final)
    log.info("%s: %d file(s) into %s", where, len(files), final)
    return Extracted(kind, str(ds), -1, files, str(final))


def _rollback(conn: Any) -> None:
    try:
        conn.rollback()
    except Exception:  # the connection may already be gone; the error that matters is raised
        log.debug("rollback after a failed extraction failed too", exc_info=True)


def watermark(conn: Any, source: PostgresSource) -> dt.datetime | None:
    """The source's watermark: ``watermark_query``'s single value, else the maximum event time."""
    sql = _sql(conn)
    query = source.watermark_query or sql.SQL("SELECT max({event}) FROM {table}").format(
        event=sql.Identifier(source.event_time_column),
        table=sql.Identifier(*source.table.split(".")),  # type: ignore[union-attr]
    )
    with conn.cursor() as cur:
        cur.execute(query)
        row = cur.fetchone()
    conn.rollback()
    value = row[0] if row else None
    if value is not None and (not isinstance(value, dt.datetime) or value.tzinfo is None):
        raise SourceError(f"watermark of {source.table or 'query'} must be a timestamptz, got {value!r}")
    return value


def day_closed(conn: Any, source: PostgresSource, ds: dt.date) -> bool:
    """True once the watermark has passed the end of ``ds`` plus ``allowed_lateness_minutes``."""
    return day_state(conn, source, ds).closed


@dataclass(frozen=True)
class DayState:
    """Where a PostgreSQL source's watermark stands against the end of one day (what the sensor reports)."""

    watermark: dt.datetime | None
    needed: dt.datetime  # the day's end plus the allowed lateness

    @property
    def closed(self) -> bool:
        return self.watermark is not None and self.watermark >= self.needed

    def describe(self, name: str) -> str:
        seen = "no rows (watermark NULL)" if self.watermark is None else f"watermark {self.watermark.isoformat()}"
        return f"{name}: {seen}, needs {self.needed.isoformat()} (the day's end + allowed_lateness_minutes)"


def day_state(conn: Any, source: PostgresSource, ds: dt.date) -> DayState:
    """The source's watermark and the value that closes ``ds``."""
    _, end = _day_bounds(ds)
    return DayState(watermark(conn, source), end + dt.timedelta(minutes=source.allowed_lateness_minutes))


def s3_export_complete(source: S3Source, ds: dt.date, conn_id: str | None = None) -> bool:
    """Whether the day's prefix holds its ``_SUCCESS`` marker (the producer's "complete")."""
    from loopline import objectstore

    bucket, key = objectstore.split(source.prefix.replace("{ds}", str(ds)) + f"/{MARKER}")
    with objectstore.s3(conn_id) as s3:
        return bool(s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("KeyCount", 0))


def extracted_kinds(cfg: Any) -> list[str]:
    """The inputs whose source is not the landing drop (they are brought into it day by day)."""
    return [kind for kind in CONTRACT if getattr(cfg.sources, kind).kind != "landing"]


def extract_inputs(cfg: Any, ds: dt.date, connect: Any, kinds: list[str] | None = None) -> dict[str, Any]:
    """Bring ``ds`` of every non-landing input (or of ``kinds``) into the day's landing drop: :func:`extract_day`
    for PostgreSQL sources (over ``connect(conn_id)``, a DB-API connection closed afterwards),
    :func:`copy_s3_day` for S3 ones. What the daily run's ``extract_sources`` task and each day of a range
    backfill do. Raises :class:`SourceError` naming the source and the day."""
    from loopline.config import resolve_uri

    landing_root = resolve_uri(cfg.storage.landing_uri)
    out: dict[str, Any] = {}
    for kind in extracted_kinds(cfg) if kinds is None else kinds:
        source = getattr(cfg.sources, kind)
        if source.kind == "s3":
            copied = copy_s3_day(source, kind, ds, landing_root, cfg.storage.aws_conn_id)
            out[kind] = {"files": copied.files}
            continue
        conn = connect(source.conn_id)
        try:
            extracted = extract_day(conn, source, kind, ds, landing_root)
        finally:
            conn.close()
        out[kind] = {"rows": extracted.rows, "files": extracted.files}
    return out


def closed_through(cfg: Any, end: dt.date, connect: Any) -> list[str]:
    """The PostgreSQL inputs whose watermark has not closed ``end`` (empty: every day up to ``end`` is
    closed, the watermark being the latest event time or a configured query that only grows)."""
    open_kinds = []
    for kind in extracted_kinds(cfg):
        source = getattr(cfg.sources, kind)
        if source.kind != "postgres":
            continue
        conn = connect(source.conn_id)
        try:
            state = day_state(conn, source, end)
        finally:
            conn.close()
        if not state.closed:
            open_kinds.append(state.describe(f"sources.{kind} ({source.table or 'query'} on {source.conn_id})"))
    return open_kinds

"""Range backfills: many days through the daily pipeline's steps in one run, each day published on its own.

A range backfill ingests, gates and featurises days ``start .. end`` in day order, in chunks (the first of
``backfill.chunk_days``, the next of about ``backfill.chunk_rows`` transactions each, :func:`chunk_size`), and
publishes each day's raw and feature partitions with the daily run's own gates and commits (same rows, same gates,
same quarantine, one atomic commit per table and day). What it adds over a backfill of ``feature_pipeline`` runs:
no per-day orchestration (one task, one Spark session, no scheduler round trips between days), and the features of
a whole chunk built in one pass (one Spark job per state table and one for the features,
:func:`spark_jobs.features.run_days`) once the chunk's raw days are published.

This module knows nothing of Airflow: the Airflow task hands :func:`run_range` the step that processes a
chunk of days.

- :func:`plan_range` refuses a bad range before any work (start after end, days without a complete landing
  drop, a range longer than ``backfill.max_days``).
- :func:`dependents`: the already-published later days whose features read a day of the range (its daily
  aggregates enter their windows, its transactions are matched to their labels): a correction recomputes them.
- :class:`Ledger` records progress in ``backfill_runs`` (days done/total, rows/s, current chunk, ETA), holds
  one advisory lock per day (an overlapping backfill that is still alive is refused; a killed one holds
  nothing) and tells a rerun of the same range where to resume.
- :func:`day_held` tells the daily run of a day whether a live range backfill holds it (``feature_pipeline``
  waits while it does).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from loopline import lake as tables
from loopline.config import BackfillConfig, LooplineConfig

log = logging.getLogger(__name__)

# Advisory locks of range backfills: (this class id, the day's ordinal), held for the run's whole session.
LOCK_CLASS = 0x0B_F111
# Fault injection for tests and drills: "<ds>:<point>" raises BackfillFault at that point of that day
# (points: after_ingest, after_raw, after_features).
FAULT_ENV = "LOOPLINE_BACKFILL_FAULT"


class RangeRefused(ValueError):
    """The range cannot be backfilled as asked; nothing was done."""


class DayFailed(RuntimeError):
    """A day failed (its gate or its data): the range stops there; earlier days stay published."""

    def __init__(self, day: dt.date, reason: str) -> None:
        super().__init__(f"ds={day}: {reason}")
        self.day = day
        self.reason = reason


class BackfillFault(RuntimeError):
    """An injected fault (:data:`FAULT_ENV`): stands for a crash at that point of a day."""


def fault_point(day: dt.date, point: str) -> None:
    """Raise :class:`BackfillFault` when :data:`FAULT_ENV` names this day and point."""
    wanted = os.environ.get(FAULT_ENV, "")
    if wanted and wanted == f"{day}:{point}":
        raise BackfillFault(f"injected fault at ds={day} {point} ({FAULT_ENV}={wanted})")


def plan_range(start: dt.date, end: dt.date, cfg: LooplineConfig, has_drop: Callable[[dt.date], bool]) -> list[dt.date]:
    """The days of ``start .. end``; raises :class:`RangeRefused` with what to change when the range is bad.

    ``has_drop(day)``: whether the day's landing drop is complete (both markers).
    """
    if start > end:
        raise RangeRefused(f"start {start} is after end {end}: give the first day as start, the last as end")
    days = tables.day_range(start, end)
    if len(days) > cfg.backfill.max_days:
        raise RangeRefused(
            f"{len(days)} days from {start} to {end} exceed backfill.max_days={cfg.backfill.max_days}: split the range"
        )
    missing = [day for day in days if not has_drop(day)]
    if missing:
        listed = ", ".join(str(day) for day in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise RangeRefused(
            f"{len(missing)} day(s) of {start} .. {end} have no complete landing drop (transactions and labels "
            f"with _SUCCESS, or an S3 source's export with its marker): {listed}. The range goes beyond the data: "
            "end it at the last delivered day, or wait for the drops."
        )
    return days


def check_range(
    start: dt.date, end: dt.date, cfg: LooplineConfig, connect: Callable[[str], Any] | None = None
) -> list[dt.date]:
    """:func:`plan_range` against the configured sources (raises :class:`RangeRefused`).

    A day's input is there when its landing drop is complete (landing inputs), its export holds its marker
    (S3 inputs), or, for PostgreSQL inputs, when the watermark has closed ``end`` (checked when ``connect``,
    ``conn_id`` -> DB-API connection, is given: the task does, a client without the connections does not).
    Each day of a range backfill then extracts its non-landing inputs into the day's drop as the daily run's
    ``extract_sources`` does (:func:`loopline.sources.extract_inputs`).
    """
    from loopline.config import resolve_uri
    from loopline.landing import KINDS, Landing
    from loopline.sources import closed_through, s3_export_complete

    landing = Landing(resolve_uri(cfg.storage.landing_uri), cfg.storage.aws_conn_id)
    sources = {kind: getattr(cfg.sources, kind) for kind in KINDS}
    if connect is not None and start <= end:
        still_open = closed_through(cfg, end, connect)
        if still_open:
            raise RangeRefused(
                f"the PostgreSQL source has not closed {end} yet: {'; '.join(still_open)}. End the range at the "
                "last closed day, or wait for the source"
            )

    def has_input(day: dt.date) -> bool:
        for kind, source in sources.items():
            if source.kind == "landing" and not landing.is_complete(kind, str(day)):
                return False
            if source.kind == "s3" and not s3_export_complete(source, day, cfg.storage.aws_conn_id):
                return False
        return True

    return plan_range(start, end, cfg, has_input)


DAG_ID = "backfill_range"
ACTIVE_STATES = ("queued", "running")


def _overlaps(run: dict, start: dt.date, end: dt.date) -> bool:
    conf = run.get("conf") or {}
    try:
        other_start, other_end = dt.date.fromisoformat(conf["start"]), dt.date.fromisoformat(conf["end"])
    except (KeyError, TypeError, ValueError):
        return False
    return other_start <= end and start <= other_end


def request_range(api: Any, start: dt.date, end: dt.date, cfg: LooplineConfig, *, cascade: bool = True) -> str:
    """Create a ``backfill_range`` run for ``start .. end`` through the Airflow REST client ``api``
    (:class:`loopline.stack.AirflowApi`); returns its run id. Refuses (:class:`RangeRefused`), before anything
    is created, a bad range or one that overlaps a queued or running range backfill."""
    check_range(start, end, cfg)
    for run in api.dag_runs(DAG_ID):
        if run.get("state") in ACTIVE_STATES and _overlaps(run, start, end):
            conf = run.get("conf") or {}
            raise RangeRefused(
                f"{start} .. {end} overlaps the {run.get('state')} range backfill {run['run_id']} "
                f"({conf.get('start')} .. {conf.get('end')}): wait for it to finish, or choose days outside it"
            )
    run_id = f"{DAG_ID}__{start}__{end}__{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}"
    api.unpause(DAG_ID)
    api.trigger(DAG_ID, run_id, {"start": str(start), "end": str(end), "cascade": cascade})
    return run_id


def request_rescore(api: Any, days: list[dt.date], dag_id: str = "batch_score") -> dict | None:
    """Re-score ``days`` (the stale ones) with one backfill of ``dag_id`` over their span, completed runs
    included; returns the backfill Airflow created (None when there is nothing to re-score)."""
    if not days:
        return None
    first, last = min(days), max(days)
    return api.request(
        "POST",
        "/api/v2/backfills",
        {
            "dag_id": dag_id,
            "from_date": f"{first}T00:00:00Z",
            "to_date": f"{last}T00:00:00Z",
            "reprocess_behavior": "completed",
            "max_active_runs": 2,
            "dag_run_conf": {},
        },
    )


def reach_days(cfg: LooplineConfig) -> int:
    """How many days after a day its data can still change features: labels match transactions up to the
    label lookback back, and the feature windows (customer and label risk) read aggregates that far back."""
    from spark_jobs.features import FeatureWindows
    from spark_jobs.ingest import LABEL_LOOKBACK_DAYS

    windows = FeatureWindows.from_config(cfg)
    return LABEL_LOOKBACK_DAYS + max(windows.long_days, windows.risk_days)


def dependents(published: list[dt.date], range_days: list[dt.date], reach: int) -> list[dt.date]:
    """The published feature days after the range that read one of its days (directly or through a day that
    does), in order: each is recomputed after the range. ``published``: days with committed features."""
    if not range_days:
        return []
    out: list[dt.date] = []
    horizon = range_days[-1] + dt.timedelta(days=reach)
    for day in sorted(d for d in published if d > range_days[-1]):
        if day > horizon:
            break
        out.append(day)
        horizon = max(horizon, day + dt.timedelta(days=reach))  # a recomputed day changes its own readers
    return out


def chunks(days: list[dt.date], size: int) -> Iterator[list[dt.date]]:
    """``days`` (ascending) in chunks of at most ``size`` consecutive days: a gap (a correction's later days
    skip the days without published features) starts a new chunk, as one Spark pass covers a run of days."""
    chunk: list[dt.date] = []
    for day in days:
        if chunk and (len(chunk) == size or day != chunk[-1] + dt.timedelta(days=1)):
            yield chunk
            chunk = []
        chunk.append(day)
    if chunk:
        yield chunk


def chunk_size(cfg: BackfillConfig, days_done: int, rows_done: int) -> int:
    """Days of the next chunk: ``chunk_days`` until the range has published a day (or with ``chunk_rows`` 0),
    then as many days as ``chunk_rows`` transactions make at the rows per day published so far, from 1 to
    ``max_chunk_days`` (which caps ``chunk_days`` too)."""
    if not cfg.chunk_rows or not days_done:
        return min(cfg.chunk_days, cfg.max_chunk_days)
    per_day = max(rows_done / days_done, 1.0)
    return max(1, min(cfg.max_chunk_days, int(cfg.chunk_rows // per_day)))


@dataclass
class Progress:
    """Days done of a run and its speed; ``eta_seconds`` from the mean time of the days done so far."""

    days_total: int
    days_done: int = 0  # a resumed run starts with the days its predecessor published
    rows_done: int = 0
    started: float = field(default_factory=time.monotonic)
    run_days: int = 0  # days done by this run (the ETA's pace)

    def day_done(self, rows: int) -> None:
        self.days_done += 1
        self.run_days += 1
        self.rows_done += rows

    @property
    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    @property
    def rows_per_s(self) -> float:
        return self.rows_done / self.elapsed

    @property
    def eta_seconds(self) -> float | None:
        if not self.run_days:
            return None
        return self.elapsed / self.run_days * (self.days_total - self.days_done)

    def line(self, day: dt.date, chunk: str) -> str:
        eta = self.eta_seconds
        return (
            f"ds={day} published: {self.days_done}/{self.days_total} days, {self.rows_done} rows, "
            f"{self.rows_per_s:.0f} rows/s, chunk {chunk}, ETA {'?' if eta is None else f'{eta:.0f} s'}"
        )


def _running_backfill(conn: Any, schema: str, day: dt.date) -> tuple | None:
    """The newest ``running`` row of ``backfill_runs`` that covers ``day``: its range, or the ``cascade_days``
    after it (the later days a correction recomputes; their dates are not recorded, and published days follow
    each other). Returns ``(run_id, start_ds, end_ds, days_done, days_total, next_ds)`` or None."""
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT run_id, start_ds, end_ds, days_done, days_total, next_ds FROM {schema}.backfill_runs "  # noqa: S608
            "WHERE status = 'running' AND start_ds <= %s AND %s <= end_ds + cascade_days "
            "ORDER BY started_at DESC LIMIT 1",
            (day, day),
        )
        return cur.fetchone()


def day_held(conn: Any, schema: str, day: dt.date) -> str | None:
    """Why the daily run of ``day`` must wait: another session of this database holds the day's range-backfill
    lock (:data:`LOCK_CLASS`, the day's ordinal), named with the running ``backfill_runs`` row that covers the
    day. None when the day is free.

    Reads ``pg_locks`` rather than trying the lock: a try-lock, however briefly held, could make a range that
    starts at that moment refuse the day.
    """
    with conn.cursor() as cur:
        # Advisory keys are per database: a range of another database on the same server holds nothing here.
        cur.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
            "AND classid = %s::oid AND objid = %s::oid AND pid <> pg_backend_pid() "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) LIMIT 1",
            (LOCK_CLASS, day.toordinal()),
        )
        holder = cur.fetchone()
    if holder is None:
        return None
    run = _running_backfill(conn, schema, day)
    if run is None:
        return (
            f"ds={day} is locked by another session (pid {holder[0]}) as a range backfill's day, with no running "
            f"row in {schema}.backfill_runs covering it (a range starting, or a lock taken by hand)"
        )
    run_id, start, end, done, total, next_ds = run
    return (
        f"ds={day} is being written by range backfill {run_id} ({start} .. {end}, {done}/{total} days done, "
        f"next ds={next_ds or '-'})"
    )


class Ledger:
    """``backfill_runs`` and the per-day advisory locks, over one psycopg2 connection (kept open for the run:
    the locks live as long as its session, so a killed run releases them)."""

    def __init__(self, conn: Any, schema: str) -> None:
        self.conn = conn
        self.schema = schema
        self.conn.autocommit = True

    def _execute(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(sql.format(schema=self.schema), args)
            return cur.fetchall() if cur.description else []

    def lock(self, days: list[dt.date]) -> None:
        """Take every day's lock or none: a day held by another live backfill refuses the whole range."""
        taken: list[dt.date] = []
        for day in days:
            if self._execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, day.toordinal()))[0][0]:
                taken.append(day)
                continue
            for held in taken:
                self._execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, held.toordinal()))
            running = _running_backfill(self.conn, self.schema, day)
            other = f" ({running[0]}: {running[1]} .. {running[2]})" if running else ""
            raise RangeRefused(
                f"ds={day} is being processed by another running backfill{other}: wait for it to finish or "
                "choose a range that does not overlap it"
            )

    def begin(self, run_id: str, start: dt.date, end: dt.date, days_total: int, cascade: int) -> dt.date | None:
        """Record the run; returns the day to resume from (an unfinished run of the same range), else None."""
        previous = self._execute(
            "SELECT run_id, next_ds FROM {schema}.backfill_runs WHERE start_ds = %s AND end_ds = %s "
            "AND status IN ('running', 'failed') ORDER BY started_at DESC LIMIT 1",
            (start, end),
        )
        resume, resumed_from = (previous[0][1], previous[0][0]) if previous else (None, None)
        predecessor = None if resumed_from == run_id else resumed_from
        if resumed_from and resumed_from != run_id:
            self._execute(
                "UPDATE {schema}.backfill_runs SET status = 'superseded', updated_at = now() WHERE run_id = %s",
                (resumed_from,),
            )
        self._execute(
            """INSERT INTO {schema}.backfill_runs (run_id, start_ds, end_ds, status, days_total, cascade_days,
                   next_ds, resumed_from)
               VALUES (%s, %s, %s, 'running', %s, %s, %s, %s)
               ON CONFLICT (run_id) DO UPDATE SET status = 'running', days_total = EXCLUDED.days_total,
                   cascade_days = EXCLUDED.cascade_days, failed_ds = NULL, reason = NULL, finished_at = NULL,
                   updated_at = now()""",
            (run_id, start, end, days_total, cascade, resume or start, predecessor),
        )
        return resume

    def progress(self, run_id: str, progress: Progress, next_ds: dt.date | None, chunk: str) -> None:
        self._execute(
            """UPDATE {schema}.backfill_runs SET days_done = %s, rows_done = %s, rows_per_s = %s, eta_seconds = %s,
                   next_ds = %s, current_chunk = %s, updated_at = now() WHERE run_id = %s""",
            (
                progress.days_done,
                progress.rows_done,
                progress.rows_per_s,
                progress.eta_seconds,
                next_ds,
                chunk,
                run_id,
            ),
        )

    def finish(self, run_id: str, *, failed: DayFailed | None = None) -> None:
        if failed is None:
            self._execute(
                "UPDATE {schema}.backfill_runs SET status = 'succeeded', next_ds = NULL, eta_seconds = 0, "
                "finished_at = now(), updated_at = now() WHERE run_id = %s",
                (run_id,),
            )
            return
        self._execute(
            "UPDATE {schema}.backfill_runs SET status = 'failed', failed_ds = %s, next_ds = %s, reason = %s, "
            "finished_at = now(), updated_at = now() WHERE run_id = %s",
            (failed.day, failed.day, failed.reason[:4000], run_id),
        )

    def mark_stale(self, day: dt.date, reason: str) -> int:
        """Flag the day's scores and drift report as computed from replaced features; returns rows flagged."""
        flagged = 0
        for table in ("scoring_runs", "drift_runs"):
            with self.conn.cursor() as cur:
                cur.execute(
                    f"UPDATE {self.schema}.{table} SET stale = true, stale_reason = %s WHERE ds = %s",  # noqa: S608
                    (reason, day),
                )
                flagged += cur.rowcount
        return flagged

    def stale_days(self) -> list[dt.date]:
        """Days whose scores are stale (any role), oldest first."""
        return [row[0] for row in self._execute("SELECT DISTINCT ds FROM {schema}.scoring_runs WHERE stale ORDER BY 1")]

    def stale_score_runs(self) -> dict[dt.date, str | None]:
        """:meth:`stale_days` with the ``batch_score`` run that loaded each (the champion's row first; None when
        the day was loaded by hand), oldest first."""
        rows = self._execute(
            "SELECT DISTINCT ON (ds) ds, airflow_run_id FROM {schema}.scoring_runs WHERE stale "
            "ORDER BY ds, role = 'champion' DESC, loaded_at DESC"
        )
        return {ds: run_id for ds, run_id in rows}


@dataclass
class RangeResult:
    """What a range run did: the days it published (in order), the cascade, the day it stopped at."""

    run_id: str
    days: list[str]
    cascade: list[str]
    published: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stale_flagged: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    seconds: float = 0.0
    failed: dict | None = None


def run_range(
    run_id: str,
    start: dt.date,
    end: dt.date,
    cfg: LooplineConfig,
    *,
    published_features: list[dt.date],
    ledger: Ledger,
    step: Callable[[list[dt.date]], Iterable[tuple[dt.date, dict]]],
    end_chunk: Callable[[], None] = lambda: None,
    on_day: Callable[[dt.date, dict], None] = lambda day, result: None,
    cascade: bool | None = None,
) -> RangeResult:
    """Process ``start .. end`` (then its dependents) chunk by chunk with ``step``; returns what was published.

    The caller has validated the range (:func:`plan_range`). ``step(days)`` publishes a chunk's days in order,
    yielding each published day with at least its ``rows``; a :class:`DayFailed` from it (after the days
    before the failed one) stops the run there (recorded, then re-raised). Each day's scores and drift report
    are flagged stale when it was recomputed. ``end_chunk`` runs between chunks.
    """
    range_days = tables.day_range(start, end)
    cascade = cfg.backfill.cascade if cascade is None else cascade
    later = dependents(published_features, range_days, reach_days(cfg)) if cascade else []
    days = range_days + later
    ledger.lock(days)
    resume = ledger.begin(run_id, start, end, len(days), len(later))
    todo = [day for day in days if resume is None or day >= resume]
    result = RangeResult(run_id, [str(d) for d in range_days], [str(d) for d in later])
    result.skipped = [str(day) for day in days if day not in todo]
    if resume:
        log.info(
            "resuming %s .. %s at ds=%s (%d of %d days already published)",
            start,
            end,
            resume,
            len(result.skipped),
            len(days),
        )
    if later:
        log.info(
            "%d later published day(s) read the range and are recomputed after it (correction): %s .. %s",
            len(later),
            later[0],
            later[-1],
        )
    progress = Progress(days_total=len(days), days_done=len(result.skipped))
    reason = f"features recomputed by backfill {run_id} ({start} .. {end})"
    remaining, number = todo, 0
    while remaining:
        size = chunk_size(cfg.backfill, progress.run_days, progress.rows_done)
        group = next(chunks(remaining, size))
        remaining = remaining[len(group) :]
        number += 1
        chunk = f"{group[0]}..{group[-1]} ({number}/{number + sum(1 for _ in chunks(remaining, size))})"
        log.info("chunk %s: %d day(s)", chunk, len(group))
        ledger.progress(run_id, progress, group[0], chunk)
        published = iter(step(group))
        for i, expected in enumerate(group):
            try:
                day, done = next(published)
            except DayFailed as failed:
                ledger.finish(run_id, failed=failed)
                result.failed = {"ds": str(failed.day), "reason": failed.reason}
                log.error(
                    "range stopped at ds=%s: %s (earlier days stay published; rerun resumes)", failed.day, failed.reason
                )
                raise
            except StopIteration:
                raise RuntimeError(f"the chunk {chunk} ended before ds={expected} was published") from None
            if day != expected:
                raise RuntimeError(f"the chunk {chunk} published ds={day} where ds={expected} was next")
            progress.day_done(int(done.get("rows", 0)))
            flagged = ledger.mark_stale(day, reason)
            if flagged:
                result.stale_flagged[str(day)] = flagged
            nxt = group[i + 1] if i + 1 < len(group) else (remaining[0] if remaining else None)
            ledger.progress(run_id, progress, nxt, chunk)
            result.published.append(str(day))
            on_day(day, done)
            log.info("%s", progress.line(day, chunk))
        end_chunk()
    ledger.finish(run_id)
    result.rows, result.seconds = progress.rows_done, round(progress.elapsed, 3)
    return result

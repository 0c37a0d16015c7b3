"""backfill_range executed by Airflow (`dag.test()`) against real Spark, GX and Postgres.

One module, in order: a range publishes what day-by-day feature_pipeline runs publish (bit for bit); a failed
gate stops the range at that day and the rerun resumes there; a fault between a day's commits leaves whole
days and the rerun resumes; bad ranges are refused before any work; a corrected day recomputes the later days
to the values a clean run gives and flags their scores and drift reports stale.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest

from loopline import lake as tables
from loopline.config import get_config, resolve_uri
from loopline.lake import Lake
from loopline.synth import generate
from tests.conftest import dag_environment, environment, load_dag
from tests.lineage_support import file_transport, openlineage_conf_reset

pytestmark = pytest.mark.e2e

START = dt.date(2026, 3, 1)
DAYS = 7
ROWS = 300
SCHEMA = "backfill_e2e"
# Every table the daily run commits per day (the rolling state included).
DAY_TABLES = (
    tables.RAW_TRANSACTIONS,
    tables.RAW_LABELS,
    tables.LABELED_TRANSACTIONS,
    tables.CUSTOMER_DAILY,
    tables.MERCHANT_LABEL_DAILY,
    tables.QUARANTINE_TRANSACTIONS,
    tables.QUARANTINE_LABELS,
    tables.FEATURES,
    tables.STATE_CUSTOMER,
    tables.STATE_CUSTOMER_MERCHANTS,
    tables.STATE_MERCHANT_RISK,
)


def day(offset: int) -> dt.date:
    return START + dt.timedelta(days=offset)


@pytest.fixture(scope="module")
def env(spark_connect_url, airflow_db, postgres, tmp_path_factory):
    root = tmp_path_factory.mktemp("backfill_range")
    overrides = {
        **dag_environment(root, SCHEMA, sensor_timeout=4),
        **file_transport(root / "lineage" / "events.jsonl"),
        "LOOPLINE__STORAGE__LANDING_URI": str(root / "landing"),
        "LOOPLINE__STORAGE__LAKE_URI": str(root / "lake_range"),
        "LOOPLINE__BACKFILL__CHUNK_DAYS": "3",
        "LOOPLINE__BACKFILL__CHUNK_ROWS": "700",  # later chunks: 2 days of about 300 rows
    }
    (root / "lineage").mkdir()
    with environment(overrides):
        openlineage_conf_reset()
        postgres.migrate(SCHEMA)
        generate(START, DAYS, root / "landing", transactions_per_day=ROWS, seed=5)
        dags = {name: load_dag(name) for name in ("backfill_range", "feature_pipeline")}
        yield {"root": root, "range": dags["backfill_range"], "daily": dags["feature_pipeline"], "pg": postgres}
    openlineage_conf_reset()


def use_lake(root: Path, name: str) -> Lake:
    os.environ["LOOPLINE__STORAGE__LAKE_URI"] = str(root / name)
    get_config.cache_clear()
    return Lake(resolve_uri(get_config().storage.lake_uri))


def run_range(dag, start: dt.date, end: dt.date, **conf):
    dagrun = dag.test(run_conf={"start": str(start), "end": str(end), **conf})
    return dagrun, {ti.task_id: ti.state for ti in dagrun.get_task_instances()}


def run_range_with_fault(dag, start: dt.date, end: dt.date, at: dt.date, point: str):
    """:func:`run_range` with a fault injected at ``point`` of day ``at`` (loopline.backfill.FAULT_ENV)."""
    from loopline.backfill import FAULT_ENV

    os.environ[FAULT_ENV] = f"{at}:{point}"
    try:
        return run_range(dag, start, end)[0]
    finally:
        os.environ.pop(FAULT_ENV)


def table_rows(lake: Lake, table: str, ds: dt.date):
    import pandas as pd

    uri = lake.partition(table, ds)
    assert uri is not None, f"{table} ds={ds} not published"
    frame = pd.read_parquet(uri)
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def execute(pg, sql: str, *args) -> None:
    conn = pg.connect()
    try:
        with conn, conn.cursor() as cur:  # commits
            cur.execute(sql, args)
    finally:
        conn.close()


def ledger(pg, *columns: str) -> list[tuple]:
    return pg.query(f"SELECT {', '.join(columns)} FROM {SCHEMA}.backfill_runs ORDER BY started_at")


def test_range_publishes_what_the_daily_runs_publish(env):
    root = env["root"]
    daily = use_lake(root, "lake_daily")
    for offset in range(4):
        dagrun = env["daily"].test(logical_date=dt.datetime.combine(day(offset), dt.time(), tzinfo=dt.UTC))
        assert dagrun.state == "success"

    ranged = use_lake(root, "lake_range")
    dagrun, states = run_range(env["range"], day(0), day(3))
    assert dagrun.state == "success", states
    for offset in range(4):
        for table in DAY_TABLES:
            ours, theirs = table_rows(ranged, table, day(offset)), table_rows(daily, table, day(offset))
            assert ours.equals(theirs), f"{table} ds={day(offset)} differs from the daily run's"
        assert ranged.stats(tables.FEATURES, day(offset)) == daily.stats(tables.FEATURES, day(offset))

    columns = ("status", "days_done", "days_total", "current_chunk", "rows_done")
    status, done, total, chunk, rows = ledger(env["pg"], *columns)[-1]
    assert (status, done, total) == ("succeeded", 4, 4)
    assert chunk == f"{day(3)}..{day(3)} (2/2)"  # chunk_days = 3, then what chunk_rows makes (the rest)
    assert rows == sum(ranged.stats(tables.RAW_TRANSACTIONS, day(i))["rows"] for i in range(4))

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        asset_id = session.query(AssetModel.id).filter(AssetModel.name == "loopline_features").scalar()
        events = session.query(AssetEvent).filter(AssetEvent.asset_id == asset_id).all()
        from_range = {e.extra["ds"] for e in events if e.source_dag_id == "backfill_range"}
    assert from_range == {str(day(i)) for i in range(4)}  # one event per published day, as the daily run

    # Each published day's ingest accounting, written by the range after the day's commits (it replaced the
    # daily runs' rows of the same days: a newer raw version of each day).
    recorded = env["pg"].query(
        f"SELECT ds, rows_published, raw_version, published_by FROM {SCHEMA}.ingest_runs"
        " WHERE ds BETWEEN %s AND %s ORDER BY ds",
        day(0),
        day(3),
    )
    assert recorded == [
        (
            day(i),
            ranged.stats(tables.RAW_TRANSACTIONS, day(i))["rows"],
            ranged.current_version(tables.RAW_TRANSACTIONS, day(i)),
            "backfill_range",
        )
        for i in range(4)
    ]

    # Lineage: each day of the range reports landing -> raw -> features under the daily run's dataset names,
    # in child runs of its own (a day's features come from that day's drop only, not the range's other days).
    from loopline import lineage

    events = lineage.read_events(env["root"] / "lineage" / "events.jsonl")
    ranged_events = [e for e in events if e["job"]["name"].startswith("backfill_range.backfill_days.")]
    graph = lineage.LineageGraph.from_events(ranged_events)
    ns = "loopline"
    for offset in range(4):
        ds = day(offset)
        landing = lineage.landing(ns, "transactions", ds).key
        raw = lineage.lake(ns, tables.RAW_TRANSACTIONS, ds).key
        features = lineage.lake(ns, tables.FEATURES, ds).key
        assert features[1] == f"loopline_features/ds={ds}"  # the Asset's day, as feature_pipeline names it
        assert landing in graph.producers[raw]
        assert raw in graph.producers[features]
        assert graph.jobs[raw] == {
            "backfill_range.backfill_days.ingest_drop",
            "backfill_range.backfill_days.publish_raw",
        }
        assert graph.jobs[features] == {
            "backfill_range.backfill_days.build_features",
            "backfill_range.backfill_days.publish_features",
        }
        assert {k for k in graph.upstream(features) if k[1].startswith("loopline_landing/")} == {
            lineage.landing(ns, kind, ds).key for kind in ("transactions", "labels")
        }
        assert ranged.current_version(tables.RAW_TRANSACTIONS, ds) in graph.versions[raw]
        assert graph.versions[features] == {ranged.current_version(tables.FEATURES, ds)}
        assert lineage.analyst(ns, "ingest_runs", ds).key in graph.producers
    parents = {e["run"]["facets"]["parent"]["job"]["name"] for e in ranged_events}
    assert parents == {"backfill_range.backfill_days"}


def test_failed_gate_stops_the_range_and_the_rerun_resumes(env, capfd):
    lake = use_lake(env["root"], "lake_range")
    part = env["root"] / "landing" / "transactions" / f"ds={day(5)}" / "part-00000.csv"
    original = part.read_text()
    lines = original.splitlines()
    # A 10 % quarantine rate is over the 5 % gate.
    broken = [line if i == 0 or i % 10 else line.replace(line.split(",")[5], "abc", 1) for i, line in enumerate(lines)]
    part.write_text("\n".join(broken) + "\n")
    (part.parent / "_SUCCESS").touch()

    dagrun, _ = run_range(env["range"], day(4), day(6))
    assert dagrun.state == "failed"
    assert lake.partition(tables.FEATURES, day(4)) is not None  # before the failed day: published
    assert lake.partition(tables.RAW_TRANSACTIONS, day(5)) is None  # the failed day: nothing
    assert lake.partition(tables.FEATURES, day(6)) is None  # after it: not started
    assert lake.partition(tables.RAW_TRANSACTIONS, day(6)) is None
    assert lake.stats(tables.QUARANTINE_TRANSACTIONS, day(5))["rows"] == len(lines[1::10])
    assert lake.partition(tables.QUARANTINE_TRANSACTIONS, day(6)) is None  # ingested with day 5, never gated
    status, failed_ds, reason, next_ds = ledger(env["pg"], "status", "failed_ds", "reason", "next_ds")[-1]
    assert (status, failed_ds, next_ds) == ("failed", day(5), day(5))
    assert "ingest_stats" in reason
    assert f"stopped at ds={day(5)}" in capfd.readouterr().out

    kept = lake.current_version(tables.FEATURES, day(4))
    part.write_text(original)  # the corrected drop, marked again after its files
    (part.parent / "_SUCCESS").touch()
    # A fault after day 6's raw commit: the chunk (days 5 and 6) has its raw days published and no features
    # yet, which are built for the chunk at once after its raw days. Whole days either way.
    dagrun = run_range_with_fault(env["range"], day(4), day(6), day(6), "after_raw")
    assert dagrun.state == "failed"
    assert lake.current_version(tables.FEATURES, day(4)) == kept  # resumed at day 5: day 4 untouched
    assert lake.partition(tables.RAW_TRANSACTIONS, day(6)) is not None
    assert lake.partition(tables.FEATURES, day(5)) is None
    assert lake.partition(tables.FEATURES, day(6)) is None
    assert ledger(env["pg"], "status", "next_ds")[-1] == ("running", day(5))  # what a killed run leaves

    # A fault after day 5's features commit: day 5 is published, day 6 is not.
    dagrun = run_range_with_fault(env["range"], day(4), day(6), day(5), "after_features")
    assert dagrun.state == "failed"
    assert lake.partition(tables.FEATURES, day(5)) is not None
    assert lake.partition(tables.FEATURES, day(6)) is None

    dagrun, _ = run_range(env["range"], day(4), day(6))
    assert dagrun.state == "success"
    assert lake.current_version(tables.FEATURES, day(4)) == kept
    assert lake.partition(tables.FEATURES, day(6)) is not None
    rows = ledger(env["pg"], "status", "days_done", "days_total", "resumed_from")
    assert rows[-1][:3] == ("succeeded", 3, 3)
    assert rows[-1][3] is not None
    assert [r[0] for r in rows[-4:-1]] == ["superseded"] * 3


def test_bad_ranges_are_refused_before_any_work(env, capfd):
    from loopline.backfill import LOCK_CLASS

    lake = use_lake(env["root"], "lake_range")
    before = {d: lake.current_version(tables.FEATURES, d) for d in tables.day_range(day(0), day(6))}
    runs = len(ledger(env["pg"], "run_id"))

    dagrun, _ = run_range(env["range"], day(3), day(1))
    assert dagrun.state == "failed"
    assert f"start {day(3)} is after end {day(1)}" in capfd.readouterr().out

    dagrun, _ = run_range(env["range"], day(5), day(DAYS + 2))
    assert dagrun.state == "failed"
    assert "goes beyond the data" in capfd.readouterr().out

    holder = env["pg"].connect()  # another backfill, alive, holding day 2
    holder.autocommit = True
    with holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, day(2).toordinal()))
    try:
        dagrun, _ = run_range(env["range"], day(1), day(3))
    finally:
        holder.close()
    assert dagrun.state == "failed"
    assert f"ds={day(2)} is being processed by another running backfill" in capfd.readouterr().out

    assert {d: lake.current_version(tables.FEATURES, d) for d in before} == before
    assert len(ledger(env["pg"], "run_id")) == runs  # nothing recorded either


def test_correction_recomputes_later_days_like_a_clean_run(env):
    root, pg = env["root"], env["pg"]
    lake = use_lake(root, "lake_range")
    for offset in (3, 4):  # a scored and monitored day, to be flagged stale
        execute(
            pg,
            f"INSERT INTO {SCHEMA}.scoring_runs (ds, role, model_name, model_version, model_run_id, threshold, "
            "rows_scored, rows_flagged, rows_explained, score_seconds, load_seconds, lake_uri) "
            "VALUES (%s, 'champion', 'm', 1, 'r', 0.5, 1, 0, 0, 0, 0, 'x')",
            day(offset),
        )
    execute(
        pg,
        f"INSERT INTO {SCHEMA}.drift_runs (ds, model_name, model_version, backend, drift, signals, min_signals, "
        "drifted_features, reference_rows, current_rows, summary) "
        "VALUES (%s, 'm', 1, 'scipy', false, 0, 1, '{}', 1, 1, 's')",
        day(4),
    )
    before = {offset: table_rows(lake, tables.FEATURES, day(offset)) for offset in range(2, DAYS)}

    # The corrected drop of day 1: every amount tripled.
    part = root / "landing" / "transactions" / f"ds={day(1)}" / "part-00000.csv"
    lines = part.read_text().splitlines()
    header = lines[0].split(",")
    column = header.index("amount")

    def tripled(line: str) -> str:
        fields = line.split(",")
        fields[column] = f"{float(fields[column]) * 3:.2f}"
        return ",".join(fields)

    part.write_text("\n".join([lines[0], *[tripled(line) for line in lines[1:]]]) + "\n")
    (part.parent / "_SUCCESS").touch()

    dagrun, _ = run_range(env["range"], day(1), day(1))
    assert dagrun.state == "success"
    cascade, total = ledger(pg, "cascade_days", "days_total")[-1]
    assert (cascade, total) == (DAYS - 2, DAYS - 1)  # days 2 .. 6 recomputed after day 1

    clean = use_lake(root, "lake_clean")
    dagrun, _ = run_range(env["range"], day(0), day(DAYS - 1))
    assert dagrun.state == "success"
    window = [c for c in before[2].columns if c.startswith("sum_") and c.endswith("d")]
    changed = []
    for offset in range(2, DAYS):
        ours, theirs = table_rows(lake, tables.FEATURES, day(offset)), table_rows(clean, tables.FEATURES, day(offset))
        assert ours.equals(theirs), f"features ds={day(offset)} differ from a clean run's"
        if not ours[window].equals(before[offset][window]):
            changed.append(offset)
    assert changed, "no later day's windowed sums read the corrected day"

    stale = pg.query(f"SELECT ds, output FROM {SCHEMA}.stale_days ORDER BY ds, output")
    assert stale == [(day(3), "scores"), (day(4), "drift_report"), (day(4), "scores")]


def test_cli_refuses_a_range_overlapping_a_running_backfill(env):
    from loopline import backfill

    class Api:  # the REST client's surface request_range uses; a running range holds days 2 .. 5
        def __init__(self):
            self.created = []

        def dag_runs(self, dag_id):
            conf = {"start": str(day(2)), "end": str(day(5))}
            return [{"run_id": "backfill_range__x", "state": "running", "conf": conf}]

        def unpause(self, dag_id):
            self.created.append(("unpause", dag_id))

        def trigger(self, dag_id, run_id, conf):
            self.created.append((dag_id, conf))

    api = Api()
    with pytest.raises(backfill.RangeRefused, match="overlaps the running range backfill backfill_range__x"):
        backfill.request_range(api, day(4), day(6), get_config())
    assert api.created == []
    run_id = backfill.request_range(api, day(0), day(1), get_config())
    assert run_id.startswith("backfill_range__")
    assert api.created[-1] == (
        "backfill_range",
        {"start": str(day(0)), "end": str(day(1)), "cascade": True},
    )
    shutil.rmtree(env["root"] / "lake_clean", ignore_errors=True)

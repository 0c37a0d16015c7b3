"""A PostgreSQL source gives the same raw and feature partitions as the landing drop of the same generated
days: each day's rows are extracted (server-side cursor) into the day's drop, which the ingest reads with the
same checks.
Re-extraction replaces the day; a failing, slow or mistyped query names the source and the day and leaves
the existing drop alone; the watermark decides when a day is closed."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import uuid
from pathlib import Path

import pytest

from loopline import lake as tables
from loopline import sources_postgres
from loopline.config import PostgresSource, load_config
from loopline.lake import Lake
from loopline.landing import Landing
from loopline.schemas import LABEL_COLUMNS, TRANSACTION_COLUMNS
from loopline.sources import SourceError, day_closed, extract_day
from loopline.synth import generate

pytestmark = pytest.mark.spark

START = dt.date(2026, 1, 1)
DS = dt.date(2026, 1, 3)
TYPES = sources_postgres.TYPES  # the landing contract's columns as source column types


def _rows(landing: Path, kind: str) -> list[list[str]]:
    out = []
    for day in sorted((landing / kind).glob("ds=*")):
        for path in sorted(day.glob("part-*")):
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", encoding="utf-8", newline="") as handle:
                out += list(csv.reader(handle))[1:]
    return out


def _day_rows(landing: Path, kind: str) -> list[list[str]]:
    day = landing / kind / f"ds={DS}"
    out = []
    for path in sorted(day.glob("part-*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8", newline="") as handle:
            out += list(csv.reader(handle))[1:]
    return out


@pytest.fixture(scope="module")
def source_db(postgres, tmp_path_factory):
    """Three generated days in landing files, and the same rows in two tables of a source database."""
    root = tmp_path_factory.mktemp("pgsource")
    files = root / "files"
    generate(START, 3, files, transactions_per_day=400, seed=11)
    schema = f"src_{uuid.uuid4().hex[:6]}"
    conn = postgres.connect()
    with conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
        for kind, columns in (("transactions", TRANSACTION_COLUMNS), ("labels", LABEL_COLUMNS)):
            ddl = ", ".join(f"{c} {TYPES[c]}" for c in columns)
            cur.execute(f"CREATE TABLE {schema}.{kind} ({ddl}, updated_at timestamptz DEFAULT now())")
            rows = _rows(files, kind)
            text = "\n".join(",".join(r) for r in rows) + "\n"
            cur.copy_expert(
                f"COPY {schema}.{kind} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", io.StringIO(text)
            )
    conn.commit()
    yield postgres, conn, schema, files, root
    conn.close()


@pytest.fixture(params=["psycopg2", "psycopg"])
def conn(request, source_db):
    """The source connection with either driver: tests connect with psycopg2, while the postgres provider's
    hook (what the DAG's tasks use) returns a psycopg 3 connection."""
    pg, shared, *_ = source_db
    if request.param == "psycopg2":
        yield shared
        return
    import psycopg

    other = psycopg.connect(host=pg.host, port=pg.port, user=pg.user, dbname=pg.database)
    yield other
    other.close()


def _source(schema: str, kind: str, **over) -> PostgresSource:
    event = "event_time" if kind == "transactions" else "reported_at"
    return PostgresSource(kind="postgres", conn_id="src", table=f"{schema}.{kind}", event_time_column=event, **over)


def _cfg(landing: Path, lake: Path):
    return load_config(
        environ={"LOOPLINE__STORAGE__LANDING_URI": str(landing), "LOOPLINE__STORAGE__LAKE_URI": str(lake)}
    )


def _raw(spark, lake: Lake, table: str, version: str) -> list[tuple]:
    frame = spark.read.parquet(lake.version_uri(table, DS, version)).drop("source_file")
    return sorted((tuple(r) for r in frame.collect()), key=repr)


def test_postgres_and_landing_give_the_same_raw_and_feature_partitions(spark, source_db):
    from spark_jobs import features, ingest

    _pg, conn, schema, files, root = source_db
    landing = root / "from_pg"
    days = [START + dt.timedelta(days=i) for i in range((DS - START).days + 1)]
    for day in days:
        for kind in ("transactions", "labels"):
            extract_day(conn, _source(schema, kind, fetch_rows=50), kind, day, str(landing))
    assert extract_day(conn, _source(schema, "transactions"), "transactions", DS, str(landing)).rows == len(
        _day_rows(files, "transactions")
    )
    assert Landing(str(landing)).is_complete("labels", str(DS))

    results = {}
    for name, drop in (("files", files), ("pg", landing)):
        cfg = _cfg(drop, root / f"lake_{name}")
        for day in days:
            ingested = ingest.run(spark, day, cfg)
            ingest.publish(day, ingested["tables"], cfg=cfg)
        results[name] = (ingested, features.run(spark, DS, cfg))
    (by_file, built_file), (by_pg, built_pg) = results["files"], results["pg"]
    for kind in ("transactions", "labels"):
        counts_file = {k: v for k, v in by_file[kind].items() if k != "files"}
        counts_pg = {k: v for k, v in by_pg[kind].items() if k != "files"}
        assert counts_pg == counts_file, kind
    assert by_pg["transactions"]["rows_written"] == 400
    for table in (tables.RAW_TRANSACTIONS, tables.RAW_LABELS, tables.CUSTOMER_DAILY):
        from_files = _raw(spark, Lake(str(root / "lake_files")), table, by_file["version"])
        from_pg = _raw(spark, Lake(str(root / "lake_pg")), table, by_pg["version"])
        assert from_pg == from_files, f"{table}: the postgres source differs from the landing drop"
    feature_rows = [
        sorted((tuple(r) for r in spark.read.parquet(built["uri"]).collect()), key=repr)
        for built in (built_file, built_pg)
    ]
    assert len(feature_rows[0]) == 400
    assert feature_rows[1] == feature_rows[0], "features from the postgres source differ from the landing drop's"


def test_reextracting_a_day_replaces_it_with_late_updates(source_db, conn, tmp_path):
    _pg, _conn, schema, _files, _root = source_db
    source = _source(schema, "transactions")
    first = extract_day(conn, source, "transactions", DS, str(tmp_path))
    amounts = {r[0]: float(r[5]) for r in _rows(tmp_path, "transactions")}
    with conn.cursor() as cur:
        cur.execute("SELECT now()")
        extracted_at = cur.fetchone()[0]
    conn.commit()
    with conn.cursor() as cur:
        cur.execute(
            f"UPDATE {schema}.transactions SET amount = amount + 1, updated_at = clock_timestamp() "
            f"WHERE transaction_id = (SELECT min(transaction_id) FROM {schema}.transactions "
            "WHERE event_time >= %s AND event_time < %s)",
            (dt.datetime(2026, 1, 3, tzinfo=dt.UTC), dt.datetime(2026, 1, 4, tzinfo=dt.UTC)),
        )
        cur.execute(
            f"SELECT DISTINCT (event_time AT TIME ZONE 'UTC')::date FROM {schema}.transactions WHERE updated_at > %s",
            (extracted_at,),
        )
        changed_days = {row[0] for row in cur.fetchall()}
    conn.commit()
    assert changed_days == {DS}  # how an operator finds the days to re-extract
    again = extract_day(conn, source, "transactions", DS, str(tmp_path))
    assert again.rows == first.rows
    after = {r[0]: float(r[5]) for r in _rows(tmp_path, "transactions")}
    changed = {tid for tid, amount in after.items() if amount != amounts[tid]}
    assert changed == {min(amounts)}  # the late update, picked up by re-extracting its day
    assert after[min(amounts)] == amounts[min(amounts)] + 1
    day = tmp_path / "transactions" / f"ds={DS}"
    assert sorted(p.name for p in day.iterdir()) == ["_SUCCESS", "part-00000.csv.gz"]
    assert not [p for p in (tmp_path / "transactions").iterdir() if p.name.startswith(".")]  # no leftovers


def test_a_failing_slow_or_mistyped_source_names_the_day_and_keeps_the_drop(source_db, conn, tmp_path):
    _pg, _conn, schema, _files, _root = source_db
    good = extract_day(conn, _source(schema, "labels"), "labels", DS, str(tmp_path))
    before = sorted(p.name for p in Path(good.folder).iterdir())

    broken = PostgresSource(
        kind="postgres",
        conn_id="src",
        query="SELECT * FROM no_such_table",
        event_time_column="reported_at",
        watermark_query="SELECT now()",
    )
    with pytest.raises(SourceError, match=r"ds=2026-01-03.*no_such_table"):
        extract_day(conn, broken, "labels", DS, str(tmp_path))
    slow = PostgresSource(
        kind="postgres",
        conn_id="src",
        timeout_seconds=1,
        event_time_column="reported_at",
        query=f"SELECT *, pg_sleep(3) FROM {schema}.labels LIMIT 1",
        watermark_query="SELECT now()",
    )
    with pytest.raises(SourceError, match=r"ds=2026-01-03.*statement timeout"):
        extract_day(conn, slow, "labels", DS, str(tmp_path))
    naive = PostgresSource(
        kind="postgres",
        conn_id="src",
        event_time_column="reported_at",
        watermark_query="SELECT now()",
        query=f"SELECT transaction_id, is_fraud, reported_at::timestamp AS reported_at FROM {schema}.labels "
        "WHERE reported_at >= %(start)s AND reported_at < %(end)s",
    )
    with pytest.raises(SourceError, match="reported_at is a timestamp without time zone"):
        extract_day(conn, naive, "labels", DS, str(tmp_path))
    missing = PostgresSource(
        kind="postgres",
        conn_id="src",
        event_time_column="reported_at",
        watermark_query="SELECT now()",
        query=f"SELECT transaction_id, reported_at FROM {schema}.labels WHERE reported_at >= %(start)s "
        "AND reported_at < %(end)s",
    )
    with pytest.raises(SourceError, match=r"returns no column.*is_fraud"):
        extract_day(conn, missing, "labels", DS, str(tmp_path))
    assert sorted(p.name for p in Path(good.folder).iterdir()) == before
    assert not [p for p in (tmp_path / "labels").iterdir() if p.name.startswith(".")]


def test_the_day_closes_when_the_watermark_passes_its_end_plus_lateness(source_db, conn):
    _pg, _conn, schema, _files, _root = source_db
    source = _source(schema, "transactions", allowed_lateness_minutes=30)
    assert day_closed(conn, source, DS - dt.timedelta(days=1))  # the last day holds rows after 01-02 00:30
    assert not day_closed(conn, source, DS)  # nothing after 2026-01-04 00:30 yet
    with conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO {schema}.transactions (transaction_id, event_time) VALUES ('late', %s)",
            (dt.datetime(2026, 1, 4, 0, 31, tzinfo=dt.UTC),),
        )
    conn.commit()
    try:
        assert day_closed(conn, source, DS)
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DELETE FROM {schema}.transactions WHERE transaction_id = 'late'")
        conn.commit()


def test_a_day_that_never_closes_fails_the_sensor_naming_the_source(source_db, airflow_db, capfd, monkeypatch):
    """feature_pipeline executed by Airflow: the watermark sensor's timeout names the source and its watermark."""
    import json

    from airflow.dag_processing.dagbag import DagBag

    from loopline.config import get_config
    from tests.conftest import REPO, run_day

    pg, _conn, schema, _files, root = source_db
    source = f"{{kind: postgres, conn_id: src, table: {schema}.transactions, event_time_column: event_time}}"
    admin = {"conn_type": "postgres", "host": pg.host, "port": pg.port, "login": pg.user, "schema": pg.database}
    for name, value in {
        "LOOPLINE__SOURCES__TRANSACTIONS": source,
        "LOOPLINE__STORAGE__LANDING_URI": str(root / "never"),
        "LOOPLINE__STORAGE__LAKE_URI": str(root / "never-lake"),
        "LOOPLINE__VALIDATION__SENSOR_MODE": "reschedule",
        "LOOPLINE__VALIDATION__SENSOR_TIMEOUT_SECONDS": "2",
        "LOOPLINE__VALIDATION__SENSOR_POKE_SECONDS": "1",
        "AIRFLOW_CONN_SRC": json.dumps(admin),
        # The labels still come from the landing drop: its sensor needs its connection, or it fails and retries.
        "AIRFLOW_CONN_LOOPLINE_LANDING_FS": json.dumps({"conn_type": "fs", "extra": {"path": ""}}),
    }.items():
        monkeypatch.setenv(name, value)
    get_config.cache_clear()
    try:
        dag = DagBag(dag_folder=str(REPO / "dags" / "feature_pipeline.py")).dags["feature_pipeline"]
        dagrun, states = run_day(dag, dt.date(2026, 2, 1))  # the source's rows end in January
    finally:
        get_config.cache_clear()
    assert dagrun.state == "failed"
    assert states["wait_for_source_day"] == "failed"
    assert states["wait_for_drop"] == "failed"  # the labels' drop timed out too (a timeout is never retried)
    assert states["ingest_drop"] == "upstream_failed"
    out = capfd.readouterr().out
    assert "ds=2026-02-01 never closed within validation.sensor_timeout_seconds (2s)" in out
    assert f"sources.transactions ({schema}.transactions on connection src): watermark 2026-01-0" in out

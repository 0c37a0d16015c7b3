"""The three source kinds give the same raw and feature partitions, row for row, for the same generated day
(and the day before it, whose transactions the day's labels match): the landing drop as generated, the same
days written by the generator's PostgreSQL output into source tables
(real PostgreSQL) and extracted, and the same day exported under an S3 prefix (the session's S3-compatible
server) and copied. The PostgreSQL and S3 days are brought into the drop by :func:`extract_inputs`, what the
daily ``extract_sources`` task and each day of a range backfill run, configured only through ``sources``;
the range backfill's check accepts the closed day and refuses the next one."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest

from loopline import backfill
from loopline import lake as tables
from loopline.config import load_config
from loopline.lake import Lake
from loopline.landing import Landing
from loopline.sources import extract_inputs
from loopline.sources_postgres import source_settings, write_days
from loopline.synth import generate

pytestmark = [pytest.mark.spark, pytest.mark.integration]

START, DS = dt.date(2026, 3, 8), dt.date(2026, 3, 9)  # two small days, used by no other source test
DAYS = [START, DS]
ROWS = 300


@pytest.fixture(scope="module")
def day(postgres, s3, tmp_path_factory):
    """Two generated days as landing files, as PostgreSQL source tables, and as S3 exports."""
    root = tmp_path_factory.mktemp("kinds")
    files = root / "files"
    generate(START, len(DAYS), files, transactions_per_day=ROWS, seed=23, compress=True)

    schema = f"src_{uuid.uuid4().hex[:6]}"
    conn = postgres.connect()
    loaded = write_days(conn, schema, files)
    again = write_days(conn, schema, files)  # re-writing a day replaces its rows
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {schema}.transactions")
        in_table = cur.fetchone()[0]
    conn.commit()
    conn.close()
    assert again == loaded
    assert in_table == loaded["transactions"] == len(DAYS) * ROWS

    bucket = f"kinds-{uuid.uuid4().hex[:8]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    for day in DAYS:
        for kind in ("transactions", "labels"):
            for path in (files / kind / f"ds={day}").iterdir():
                client.upload_file(str(path), bucket, f"exports/{kind}/date={day}/{path.name}")
    return root, files, schema, bucket


def _connect(pg):
    """``conn_id`` -> a psycopg 3 connection (what the postgres provider's hook returns in a task)."""
    import psycopg

    return lambda conn_id: psycopg.connect(host=pg.host, port=pg.port, user=pg.user, dbname=pg.database)


def _cfg(landing: Path, lake: Path, sources: dict[str, str] | None = None):
    return load_config(
        environ={
            "LOOPLINE__STORAGE__LANDING_URI": str(landing),
            "LOOPLINE__STORAGE__LAKE_URI": str(lake),
            **(sources or {}),
        }
    )


def _rows(spark, uri: str, drop: tuple[str, ...] = ()) -> list[tuple]:
    frame = spark.read.parquet(uri).drop(*drop)
    return sorted((tuple(r) for r in frame.collect()), key=repr)


def test_landing_postgres_and_s3_give_the_same_raw_and_feature_partitions(spark, postgres, day):
    from spark_jobs import features, ingest

    root, files, schema, bucket = day
    connect = _connect(postgres)
    s3_sources = {
        f"LOOPLINE__SOURCES__{kind.upper()}": f"{{kind: s3, prefix: 's3://{bucket}/exports/{kind}/date={{ds}}'}}"
        for kind in ("transactions", "labels")
    }
    configs = {
        "landing": _cfg(files, root / "lake_landing"),
        "postgres": _cfg(root / "from_pg", root / "lake_pg", source_settings(schema, "src")),
        "s3": _cfg(root / "from_s3", root / "lake_s3", s3_sources),
    }
    next_day = DS + dt.timedelta(days=1)
    for name in ("postgres", "s3"):
        cfg = configs[name]
        # The range backfill's check: the days are closed (the loader's watermark) or exported (markers) ...
        assert backfill.check_range(START, DS, cfg, connect) == DAYS, name
        # ... and the next day is not: refused before any work, naming why.
        refused = "has not closed 2026-03-10" if name == "postgres" else r"1 day\(s\) .* 2026-03-10\."
        with pytest.raises(backfill.RangeRefused, match=refused):
            backfill.check_range(START, next_day, cfg, connect)
        landing = Landing(str(root / f"from_{'pg' if name == 'postgres' else 's3'}"))
        for day in DAYS:
            extracted = extract_inputs(cfg, day, connect)
            assert set(extracted) == {"transactions", "labels"}, name
            for kind in ("transactions", "labels"):
                assert landing.is_complete(kind, str(day)), (name, kind)
    assert extracted["transactions"]["files"] == ["part-00000.csv.gz"]

    results = {}
    for name, cfg in configs.items():
        for day in DAYS:
            ingested = ingest.run(spark, day, cfg)
            ingest.publish(day, ingested["tables"], cfg=cfg)
        results[name] = (ingested, features.run(spark, DS, cfg))
    lakes = {
        "landing": Lake(str(root / "lake_landing")),
        "postgres": Lake(str(root / "lake_pg")),
        "s3": Lake(str(root / "lake_s3")),
    }
    (base, base_built) = results["landing"]
    assert base["transactions"]["rows_written"] == ROWS
    assert base_built["rows"] == ROWS
    expected = {
        table: _rows(spark, lakes["landing"].version_uri(table, DS, base["version"]), ("source_file",))
        for table in (tables.RAW_TRANSACTIONS, tables.RAW_LABELS, tables.CUSTOMER_DAILY, tables.LABELED_TRANSACTIONS)
    }
    expected_features = _rows(spark, base_built["uri"])
    assert len(expected[tables.RAW_TRANSACTIONS]) == ROWS
    assert len(expected_features) == ROWS
    assert expected[tables.RAW_LABELS], "the day's labels are part of the comparison"
    assert expected[tables.LABELED_TRANSACTIONS], "and their match to the day before's transactions"
    for name in ("postgres", "s3"):
        ingested, built = results[name]
        for kind in ("transactions", "labels"):
            counts = {k: v for k, v in ingested[kind].items() if k != "files"}
            assert counts == {k: v for k, v in base[kind].items() if k != "files"}, (name, kind)
        for table, rows in expected.items():
            got = _rows(spark, lakes[name].version_uri(table, DS, ingested["version"]), ("source_file",))
            assert got == rows, f"{table} from the {name} source differs from the landing drop's"
        assert _rows(spark, built["uri"]) == expected_features, f"features from the {name} source differ"

"""Loading a day of scores into a real Postgres: atomic replacement, idempotent reruns, no half days."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid

import numpy as np
import pyarrow as pa
import pytest

from loopline.score_load import LoadError, ScoringRun, load_day

pytestmark = pytest.mark.integration
DS = dt.date(2026, 3, 1)


def scores(ds: dt.date, n: int, version: int = 1, seed: int = 0, prefix: str = "t") -> pa.Table:
    rng = np.random.default_rng(seed)
    score = rng.random(n)
    flagged = score >= 0.9
    reasons = [
        json.dumps([{"feature": "amount_eur", "value": 12.5, "contribution": 1.25}, {"feature": 'odd "name"'}])
        if f
        else None
        for f in flagged
    ]
    start = dt.datetime.combine(ds, dt.time(), tzinfo=dt.UTC)
    return pa.table(
        {
            "ds": pa.array([ds] * n, pa.date32()),
            "transaction_id": [f"{prefix}{i}" for i in range(n)],
            "customer_id": [f"c{i % 7}" for i in range(n)],
            "merchant_id": ["m,1"] * n,  # a comma: CSV quoting must hold
            "event_time": pa.array([start + dt.timedelta(seconds=i) for i in range(n)], pa.timestamp("us", "UTC")),
            "amount_eur": rng.random(n) * 100,
            "score": score,
            "decision": ["flag" if f else "pass" for f in flagged],
            "reasons": reasons,
            "reason_method": ["tree_shap" if f else None for f in flagged],
            "threshold": [0.9] * n,
            "model_name": ["fraud"] * n,
            "model_version": pa.array([version] * n, pa.int32()),
            "model_run_id": ["run1"] * n,
            "scored_at": pa.array([start] * n, pa.timestamp("us", "UTC")),
        }
    )


def run_row(ds: dt.date = DS, version: int = 1, role: str = "champion") -> ScoringRun:
    return ScoringRun(ds, role, "fraud", version, "run1", 0.9, 0, 0, 1.0, "lake/scores", "manual__1")


def connect(postgres, driver: str):
    """A connection as the loader role, the one Airflow's tasks log in as."""
    if driver == "psycopg2":
        return postgres.connect_loader()
    import psycopg  # what the postgres provider's hook returns with SQLAlchemy 2

    return psycopg.connect(host=postgres.host, port=postgres.port, user=postgres.loader, dbname=postgres.database)


@pytest.fixture(params=["psycopg", "psycopg2"])
def conn(postgres, request):
    schema = f"scores_{uuid.uuid4().hex[:8]}"
    postgres.migrate(schema)  # as the owner, as `loopline migrate` does: the loader may not
    connection = connect(postgres, request.param)
    yield connection, schema
    connection.rollback()
    connection.close()
    admin = postgres.connect()
    with admin.cursor() as cur:
        cur.execute(f"DROP SCHEMA {schema} CASCADE")
    admin.commit()
    admin.close()


def fetch(connection, sql: str, *args):
    with connection.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def versions(connection, schema: str) -> list[tuple]:
    return fetch(connection, f"SELECT model_version, count(*) FROM {schema}.transaction_scores GROUP BY 1")


def test_rerun_replaces_the_day_without_duplicates(conn):
    connection, schema = conn
    other_day = DS + dt.timedelta(days=1)
    load_day(connection, schema, run_row(other_day), scores(other_day, 50, prefix="o"))
    first = load_day(connection, schema, run_row(), scores(DS, 1000))
    second = load_day(connection, schema, run_row(version=2), scores(DS, 1000, version=2))
    assert (first["deleted"], first["loaded"]) == (0, 1000)
    assert (second["deleted"], second["loaded"]) == (1000, 1000)
    rows = fetch(
        connection,
        f"SELECT model_version, count(*), count(DISTINCT transaction_id) FROM {schema}.transaction_scores"
        " WHERE ds = %s GROUP BY 1",
        DS,
    )
    assert rows == [(2, 1000, 1000)]
    assert fetch(connection, f"SELECT count(*) FROM {schema}.transaction_scores WHERE ds = %s", other_day) == [(50,)]
    runs = fetch(connection, f"SELECT ds, role, model_version, rows_scored FROM {schema}.scoring_runs ORDER BY ds")
    assert runs == [(DS, "champion", 2, 1000), (other_day, "champion", 1, 50)]


def test_values_survive_the_copy(conn):
    connection, schema = conn
    table = scores(DS, 300)
    load_day(connection, schema, run_row(), table)
    flagged = fetch(
        connection,
        f"SELECT transaction_id, merchant_id, reasons->0->>'feature', reasons->1->>'feature', event_time, score "
        f"FROM {schema}.transaction_scores WHERE decision = 'flag' ORDER BY transaction_id LIMIT 1",
    )[0]
    index = int(flagged[0][1:])
    assert flagged[1:4] == ("m,1", "amount_eur", 'odd "name"')
    assert flagged[4] == table["event_time"][index].as_py()
    assert flagged[5] == pytest.approx(table["score"][index].as_py(), abs=1e-12)
    nulls = fetch(
        connection,
        f"SELECT count(*) FROM {schema}.transaction_scores"
        " WHERE decision = 'pass' AND reasons IS NULL AND reason_method IS NULL",
    )
    assert nulls[0][0] == int((np.asarray(table["decision"]) == "pass").sum())
    latest = fetch(connection, f"SELECT count(*), min(ds) FROM {schema}.latest_scores")
    assert latest == [(300, DS)]


def test_a_crash_between_delete_and_copy_leaves_the_previous_day(conn, postgres):
    connection, schema = conn
    load_day(connection, schema, run_row(), scores(DS, 500))
    seen_by_reader = []

    def crash():
        # Another session (an analyst) looks while the day is deleted but not yet reloaded.
        reader = postgres.connect()
        seen_by_reader.append(fetch(reader, f"SELECT count(*) FROM {schema}.transaction_scores WHERE ds = %s", DS))
        reader.close()
        raise RuntimeError("worker killed")

    with pytest.raises(RuntimeError, match="worker killed"):
        load_day(connection, schema, run_row(version=2), scores(DS, 800, version=2), after_delete=crash)
    assert seen_by_reader == [[(500,)]]
    assert fetch(connection, f"SELECT model_version, count(*) FROM {schema}.transaction_scores GROUP BY 1") == [
        (1, 500)
    ]
    assert fetch(connection, f"SELECT model_version FROM {schema}.scoring_runs") == [(1,)]


def test_bad_rows_halfway_roll_back_the_whole_day(conn):
    connection, schema = conn
    load_day(connection, schema, run_row(), scores(DS, 500))
    broken = scores(DS, 800, version=2)
    decisions = broken["decision"].to_pylist()
    decisions[700] = "maybe"  # violates the CHECK constraint after 700 rows were copied
    broken = broken.set_column(broken.schema.get_field_index("decision"), "decision", pa.array(decisions))
    with pytest.raises(Exception, match="decision"):
        load_day(connection, schema, run_row(version=2), broken)
    assert fetch(connection, f"SELECT model_version, count(*) FROM {schema}.transaction_scores GROUP BY 1") == [
        (1, 500)
    ]


def test_rows_of_another_day_are_refused(conn):
    connection, schema = conn
    with pytest.raises(LoadError, match="other days"):
        load_day(connection, schema, run_row(), scores(DS + dt.timedelta(days=1), 10))
    assert fetch(connection, f"SELECT count(*) FROM {schema}.transaction_scores") == [(0,)]


def test_concurrent_loads_of_one_day_serialise(conn, postgres):
    connection, schema = conn
    errors = []

    def load(version: int):
        other = postgres.connect_loader()
        try:
            load_day(other, schema, run_row(version=version), scores(DS, 2000, version=version))
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)
        finally:
            other.close()

    threads = [threading.Thread(target=load, args=(v,)) for v in (1, 2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    rows = fetch(connection, f"SELECT count(*), count(DISTINCT model_version) FROM {schema}.transaction_scores")
    assert rows == [(2000, 1)]


def test_shadow_scores_go_to_their_own_table(conn):
    connection, schema = conn
    load_day(connection, schema, run_row(), scores(DS, 100))
    load_day(connection, schema, run_row(version=3, role="challenger"), scores(DS, 100, version=3))
    assert fetch(connection, f"SELECT DISTINCT model_version FROM {schema}.transaction_scores") == [(1,)]
    assert fetch(connection, f"SELECT DISTINCT model_version FROM {schema}.transaction_scores_shadow") == [(3,)]
    assert fetch(connection, f"SELECT role FROM {schema}.scoring_runs ORDER BY role") == [
        ("challenger",),
        ("champion",),
    ]

"""feature_pipeline executed by Airflow (`dag.test()`): generated days, reruns, a failed gate, a late drop."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from loopline import lake as tables
from loopline.config import get_config, resolve_uri
from loopline.lake import Lake
from loopline.synth import generate
from tests.conftest import environment, load_dag, run_day

pytestmark = pytest.mark.e2e

START = dt.date(2026, 1, 1)
ROWS = 800


@pytest.fixture(scope="module")
def pipeline(spark_connect_url, airflow_db, postgres):  # record_ingest writes the session schema as the loader
    # dag.test() runs triggers inline without their timeout; reschedule mode exercises the same message.
    overrides = {
        "AIRFLOW_CONN_LOOPLINE_LANDING_FS": json.dumps({"conn_type": "fs", "extra": {"path": ""}}),
        "LOOPLINE__VALIDATION__SENSOR_MODE": "reschedule",
        "LOOPLINE__VALIDATION__SENSOR_TIMEOUT_SECONDS": "6",
        "LOOPLINE__VALIDATION__SENSOR_POKE_SECONDS": "1",
    }
    with environment(overrides):
        cfg = get_config()
        landing = Path(resolve_uri(cfg.storage.landing_uri))
        generate(START, 5, landing, transactions_per_day=ROWS, seed=11)
        yield load_dag("feature_pipeline"), cfg, landing


def features_rows(cfg, day):
    # pandas, not Spark: tasks run in this process under dag.test() and stop the active Spark session.
    import pandas as pd

    uri = Lake(resolve_uri(cfg.storage.lake_uri)).partition(tables.FEATURES, day)
    frame = pd.read_parquet(uri)
    return frame.sort_values("transaction_id").reset_index(drop=True)


def test_days_in_order_then_reruns_are_identical(pipeline, postgres):
    dag, cfg, _ = pipeline
    run_ids = set()
    for offset in range(3):
        dagrun, states = run_day(dag, START + dt.timedelta(days=offset))
        run_ids.add(dagrun.run_id)
        assert dagrun.state == "success", states
        assert set(states.values()) == {"success"}
    lake = Lake(resolve_uri(cfg.storage.lake_uri))
    for offset in range(3):
        assert lake.stats(tables.FEATURES, START + dt.timedelta(days=offset)) == {"rows": ROWS}

    day = START + dt.timedelta(days=2)
    first = features_rows(cfg, day)
    assert len(first) == ROWS
    versions = {lake.current_version(tables.FEATURES, day)}
    for _ in range(2):
        dagrun, _ = run_day(dag, day)
        assert dagrun.state == "success"
        versions.add(lake.current_version(tables.FEATURES, day))
        assert features_rows(cfg, day).equals(first)
    assert len(versions) == 3  # each rerun committed a new version with identical content

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        asset_id = session.query(AssetModel.id).filter(AssetModel.name == "loopline_features").scalar()
        # this module's runs only: other modules' runs (range backfills, lineage) announce their days too
        events = session.query(AssetEvent).filter(AssetEvent.asset_id == asset_id).all()
        ours = [event for event in events if event.source_run_id in run_ids]
        assert {event.extra["ds"] for event in ours} == {str(START + dt.timedelta(days=i)) for i in range(3)}

    # Each published day's ingest accounting is in Postgres, one row per day, of the raw version published last.
    rows = ingest_rows(postgres, cfg, [START + dt.timedelta(days=i) for i in range(3)])
    assert [r[:3] for r in rows] == [(START + dt.timedelta(days=i), ROWS, ROWS) for i in range(3)]
    assert all(r[3] == 0 and r[4] == 0.0 for r in rows)  # clean drops: nothing quarantined
    assert rows[2][5] == lake.current_version(tables.RAW_TRANSACTIONS, day)  # the rerun replaced the day's row
    assert {r[6] for r in rows} == {"feature_pipeline"}


def ingest_rows(postgres, cfg, days):
    return postgres.query(
        f"SELECT ds, rows_read, rows_published, rows_quarantined, quarantine_rate, raw_version, published_by,"
        f" quarantined_by_reason FROM {cfg.postgres.schema_}.ingest_runs WHERE ds = ANY(%s) ORDER BY ds",
        days,
    )


def test_failed_gate_publishes_nothing(pipeline, postgres, capfd):
    dag, cfg, landing = pipeline
    day = START + dt.timedelta(days=3)
    part = landing / "transactions" / f"ds={day}" / "part-00000.csv"
    lines = part.read_text().splitlines()
    # Break the amount of every 10th row: a 10 % quarantine rate is over the 5 % gate.
    broken = [line if i == 0 or i % 10 else line.replace(line.split(",")[5], "abc", 1) for i, line in enumerate(lines)]
    part.write_text("\n".join(broken) + "\n")
    (part.parent / "_SUCCESS").touch()  # a corrected drop is marked again, after its files

    dagrun, states = run_day(dag, day)
    assert dagrun.state == "failed"
    assert states["publish_raw"] == "failed"  # the gate failed inside it, before the commit
    assert states["build_features"] == "upstream_failed"
    assert states["publish_features"] == "upstream_failed"
    lake = Lake(resolve_uri(cfg.storage.lake_uri))
    assert lake.partition(tables.RAW_TRANSACTIONS, day) is None
    assert lake.partition(tables.FEATURES, day) is None
    assert lake.stats(tables.QUARANTINE_TRANSACTIONS, day)["rows"] == len(lines[1::10])
    assert states["record_ingest"] == "upstream_failed"
    assert ingest_rows(postgres, cfg, [day]) == []  # only published days are recorded
    log = capfd.readouterr().out  # dag.test() logs tasks to stdout
    assert "GX gate 'ingest_stats' failed" in log
    assert "quarantine_rate" in log
    assert "Validation report: file://" in log


def test_incomplete_drop_times_out_naming_the_marker(pipeline, capfd):
    dag, _, landing = pipeline
    day = START + dt.timedelta(days=4)
    marker = landing / "transactions" / f"ds={day}" / "_SUCCESS"
    marker.unlink()
    dagrun, states = run_day(dag, day)
    assert dagrun.state == "failed"
    assert states["wait_for_drop"] == "failed"
    assert states["ingest_drop"] == "upstream_failed"
    log = capfd.readouterr().out
    assert f"landing drop incomplete: {marker} did not appear within" in log

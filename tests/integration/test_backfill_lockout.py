"""A range backfill and the daily runs against real Postgres: the daily run of a day a live range holds waits,
naming the range, and goes once the range let go; a range run with ``rescore`` on plans the clear of each stale
day's own ``batch_score`` run."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from airflow.sdk.exceptions import AirflowFailException

from loopline import backfill
from loopline.config import get_config
from tests.conftest import environment

pytestmark = pytest.mark.integration

SCHEMA = "lockout_it"
D = dt.date(2026, 4, 10)
RUN_ID = "backfill_range__2026-04-09__2026-04-11__x"


def day(offset: int) -> dt.date:
    return D + dt.timedelta(days=offset)


@pytest.fixture(scope="module")
def pg(postgres):
    postgres.migrate(SCHEMA)
    conn = postgres.connect()
    try:
        with conn, conn.cursor() as cur:  # a range of three days whose correction recomputes two later ones
            cur.execute(
                f"INSERT INTO {SCHEMA}.backfill_runs (run_id, start_ds, end_ds, status, days_total, cascade_days, "
                "next_ds) VALUES (%s, %s, %s, 'running', 5, 2, %s)",
                (RUN_ID, day(-1), day(1), day(0)),
            )
    finally:
        conn.close()
    with environment({"LOOPLINE__POSTGRES__SCHEMA": SCHEMA}):
        yield postgres


def held(pg, on: dt.date) -> str | None:
    """The check as the daily run makes it: the loader's own connection."""
    conn = pg.connect_loader()
    try:
        return backfill.day_held(conn, SCHEMA, on)
    finally:
        conn.close()


def released(pg, on: dt.date) -> bool:
    """A closed session's locks go with its backend, a moment after the client closed it."""
    deadline = time.monotonic() + 10
    while held(pg, on) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_held_day_waits_naming_its_range_and_goes_once_released(pg):
    from loopline.orchestration.feature_tasks import check_day_free

    assert held(pg, day(0)) is None  # no range: the first check passes
    assert check_day_free(day(0), waited=0) is True

    range_session = backfill.Ledger(pg.connect_loader(), SCHEMA)  # the range's session, as backfill_days opens it
    range_session.lock([day(0), day(3)])
    try:
        reason = held(pg, day(0))
        assert reason is not None
        assert reason.startswith(f"ds={day(0)} is being written by range backfill {RUN_ID} ")
        assert f"({day(-1)} .. {day(1)}, 0/5 days done, next ds={day(0)})" in reason
        later = held(pg, day(3))  # a later day the correction recomputes, after the range's end
        assert later is not None
        assert RUN_ID in later
        assert held(pg, day(2)) is None  # a day the range does not hold

        assert check_day_free(day(0), waited=0) is False
        limit = get_config().backfill.daily_wait_seconds
        with pytest.raises(AirflowFailException) as failed:
            check_day_free(day(0), waited=limit)
        message = str(failed.value)
        assert RUN_ID in message
        assert f"still held after backfill.daily_wait_seconds ({limit}s)" in message
        assert "clear this task" in message
    finally:
        range_session.conn.close()  # what a finished or killed range does
    assert released(pg, day(0))
    assert held(pg, day(3)) is None
    assert check_day_free(day(0), waited=0) is True


def test_feature_pipeline_waits_for_the_range_then_fails_naming_it(pg, airflow_db, tmp_path, monkeypatch, capfd):
    """The sensor as Airflow runs it: rescheduled while the range holds the day, then failed with the range's
    name; nothing after it ran, so the day was not written (no Spark needed)."""
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import REPO, run_day

    held_day = dt.date(2026, 12, 10)  # a day no other module runs feature_pipeline for (one run per logical date)
    for kind in ("transactions", "labels"):  # the drop is complete: only the range holds the run back
        drop = tmp_path / "landing" / kind / f"ds={held_day}"
        drop.mkdir(parents=True)
        (drop / "_SUCCESS").touch()
    for name, value in {
        "LOOPLINE__STORAGE__LANDING_URI": str(tmp_path / "landing"),
        "LOOPLINE__STORAGE__LAKE_URI": str(tmp_path / "lake"),
        "LOOPLINE__VALIDATION__SENSOR_MODE": "reschedule",
        "LOOPLINE__VALIDATION__SENSOR_POKE_SECONDS": "1",
        "LOOPLINE__BACKFILL__DAILY_WAIT_SECONDS": "3",
        "AIRFLOW_CONN_LOOPLINE_LANDING_FS": '{"conn_type": "fs", "extra": {"path": ""}}',
    }.items():
        monkeypatch.setenv(name, value)
    get_config.cache_clear()
    range_session = backfill.Ledger(pg.connect_loader(), SCHEMA)
    range_session.lock([held_day])
    try:
        dag = DagBag(dag_folder=str(REPO / "dags" / "feature_pipeline.py")).dags["feature_pipeline"]
        dagrun, states = run_day(dag, held_day)
    finally:
        range_session.conn.close()
        get_config.cache_clear()
    assert dagrun.state == "failed"
    assert states["wait_for_drop"] == "success"
    assert states["wait_for_range_backfill"] == "failed"
    assert states["ingest_drop"] == "upstream_failed"
    out = capfd.readouterr().out
    assert f"ds={held_day} is locked by another session" in out
    assert "still held after backfill.daily_wait_seconds (3s)" in out
    assert not (tmp_path / "lake").exists()


def test_a_database_outage_does_not_hold_the_daily_run(monkeypatch):
    import psycopg2

    from loopline.orchestration import feature_tasks

    def down(cfg):
        raise psycopg2.OperationalError("connection refused")

    monkeypatch.setattr(feature_tasks, "open_predictions_db", down)
    assert feature_tasks.check_day_free(D, waited=0) is True


def test_a_lock_without_a_running_row_still_holds_the_day(pg):
    session = pg.connect_loader()
    session.autocommit = True
    try:
        with session.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s, %s)", (backfill.LOCK_CLASS, day(20).toordinal()))
        reason = held(pg, day(20))
        assert reason is not None
        assert "no running row" in reason
    finally:
        session.close()
    assert released(pg, day(20))


def test_the_same_key_in_another_database_holds_nothing_here(pg):
    import psycopg2

    # The administrator in the server's default database: a range of another Loopline on the same server.
    other = psycopg2.connect(host=pg.host, port=pg.port, user=pg.user, dbname="postgres")
    other.autocommit = True
    try:
        with other.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s, %s)", (backfill.LOCK_CLASS, day(0).toordinal()))
        assert held(pg, day(0)) is None
    finally:
        other.close()


def test_rescore_plans_the_clear_of_each_stale_days_own_run(pg):
    from loopline.orchestration import backfill_tasks

    conn = pg.connect()
    try:
        with conn, conn.cursor() as cur:
            for offset, role, run_id, stale in (
                (3, "champion", "scheduled__2026-04-13T00:00:00+00:00", True),
                (3, "challenger", "manual__shadow", True),  # the champion's run is the day's run
                (4, "champion", None, True),  # loaded by hand: no run to clear
                (5, "champion", "scheduled__2026-04-15T00:00:00+00:00", False),  # fresh: not re-scored
                (6, "champion", "backfill__2026-04-16T00:00:00+00:00", True),
            ):
                cur.execute(
                    f"INSERT INTO {SCHEMA}.scoring_runs (ds, role, model_name, model_version, model_run_id, "
                    "threshold, rows_scored, rows_flagged, rows_explained, score_seconds, load_seconds, lake_uri, "
                    "airflow_run_id, stale) VALUES (%s, %s, 'm', 1, 'r', 0.5, 1, 0, 0, 0, 0, 'x', %s, %s)",
                    (day(offset), role, run_id, stale),
                )
        planned = backfill_tasks.plan_rescore.function(params={"rescore": True})
    finally:
        conn.close()
    assert planned == [
        {"trigger_run_id": "scheduled__2026-04-13T00:00:00+00:00", "logical_date": "2026-04-13T00:00:00+00:00"},
        {"trigger_run_id": "backfill__2026-04-16T00:00:00+00:00", "logical_date": "2026-04-16T00:00:00+00:00"},
    ]


def test_rescore_clears_each_stale_days_batch_score_run(pg, airflow_db):
    """``rescore`` on, through Airflow: ``trigger_rescore`` runs the day's ``batch_score`` run again (a finished
    run is cleared back to queued, the scheduler then scores the day); a paused ``batch_score`` fails it."""
    from airflow.models import DagModel, DagRun
    from airflow.utils.session import create_session

    from tests.conftest import load_dag

    schema, ds = "lockout_rescore", dt.date(2026, 12, 20)  # a day no other module scores (one run per date)
    run_id = f"scheduled__{ds}T00:00:00+00:00"
    pg.migrate(schema)
    conn = pg.connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                f"INSERT INTO {schema}.scoring_runs (ds, role, model_name, model_version, model_run_id, threshold, "
                "rows_scored, rows_flagged, rows_explained, score_seconds, load_seconds, lake_uri, airflow_run_id, "
                "stale) VALUES (%s, 'champion', 'm', 1, 'r', 0.5, 1, 0, 0, 0, 0, 'x', %s, true)",
                (ds, run_id),
            )
    finally:
        conn.close()
    dag = load_dag("backfill_range").partial_subset(["plan_rescore", "trigger_rescore"], include_upstream=False)
    # The paused case fails at once here: the DAG's retries (minutes apart) are for someone unpausing batch_score.
    dag.get_task("trigger_rescore").retries = 0
    conf = {"start": "2026-01-01", "end": "2026-01-02"}

    def rescore() -> dict[str, str]:
        dagrun = dag.test(run_conf={**conf, "rescore": True})
        return {ti.task_id: ti.state for ti in dagrun.get_task_instances()}

    def batch_score_run() -> tuple[str, str] | None:
        with create_session() as session:
            run = session.query(DagRun).filter_by(dag_id="batch_score", run_id=run_id).one_or_none()
            return (str(run.state), str(run.logical_date.date())) if run else None

    def set_paused(paused: bool) -> None:
        with create_session() as session:
            updated = session.query(DagModel).filter_by(dag_id="batch_score").update({"is_paused": paused})
        assert updated == 1  # batch_score is known: a failure below is the pause, not a missing DAG

    with environment({"LOOPLINE__POSTGRES__SCHEMA": schema}):
        dag.test(run_conf=conf)  # rescore off: skipped; the bundle's DAGs (batch_score too) are now in the database
        with create_session() as session:
            was_paused = session.query(DagModel.is_paused).filter_by(dag_id="batch_score").scalar()
        try:
            set_paused(True)
            assert rescore()["trigger_rescore"] == "failed"  # paused: nothing queued behind it
            assert batch_score_run() is None
            set_paused(False)
            assert rescore()["trigger_rescore"] == "success"
            assert batch_score_run() == ("queued", str(ds))  # the day's run (not in the metadata database) again
            with create_session() as session:  # the scheduler ran it
                session.query(DagRun).filter_by(dag_id="batch_score", run_id=run_id).update({"state": "success"})
            assert rescore()["trigger_rescore"] == "success"
            assert batch_score_run() == ("queued", str(ds))  # cleared: the same run scores the day again
        finally:  # the session's metadata database is shared: leave batch_score as it was, without this run
            set_paused(bool(was_paused))
            with create_session() as session:
                session.query(DagRun).filter_by(dag_id="batch_score", run_id=run_id).delete()

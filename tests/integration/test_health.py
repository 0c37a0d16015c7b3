"""The model-health page's data (``loopline.health``) read from real Postgres as the analyst role, and rendered."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os

import pytest

from loopline import health, ingest_runs
from loopline.config import get_config
from tests.conftest import REPO

SCHEMA = "health_it"
DAYS = [dt.date(2026, 3, 1) + dt.timedelta(days=i) for i in range(6)]
DRIFT_NIGHT = DAYS[3]


@pytest.fixture(scope="module")
def history(postgres):
    postgres.migrate(SCHEMA)
    conn = postgres.connect()
    with conn, conn.cursor() as cur:
        for i, ds in enumerate(DAYS):
            version = 1 if ds < DRIFT_NIGHT else 2
            cur.execute(
                f"INSERT INTO {SCHEMA}.scoring_runs (ds, role, model_name, model_version, model_run_id, threshold,"
                " rows_scored, rows_flagged, rows_explained, score_seconds, load_seconds, lake_uri, alert_rate,"
                " alert_band_low, alert_band_high, alert_out_of_band)"
                " VALUES (%s, 'champion', 'm', %s, 'r', 0.5, 100, %s, 0, 1, 1, 'x', %s, 0.01, 0.2, false)",
                (ds, version, 5 + i, (5 + i) / 100),
            )
            for n in range(100):
                cur.execute(
                    f"INSERT INTO {SCHEMA}.transaction_scores (ds, transaction_id, customer_id, merchant_id,"
                    " event_time, amount_eur, score, decision, threshold, model_name, model_version, model_run_id,"
                    " scored_at) VALUES (%s, %s, 'c', 'm', now(), 1, %s, %s, 0.5, 'm', %s, 'r', now())",
                    (ds, f"t{i}-{n}", n / 100, "flag" if n >= 95 else "pass", version),
                )
            cur.execute(
                f"INSERT INTO {SCHEMA}.model_performance (ds, model_name, model_version, evaluated_on, rows,"
                " unlabelled_rows, positives, flagged, threshold, roc_auc, precision_at_threshold,"
                " reference_roc_auc, performance_drop) VALUES (%s, 'm', %s, %s, 100, 0, 3, 5, 0.5, %s, %s, 0.9, false)",
                (ds, version, ds + dt.timedelta(days=20), 0.8 + i / 100, 0.4),
            )
            cur.execute(
                f"INSERT INTO {SCHEMA}.model_performance_slices (ds, model_name, model_version, evaluated_on, slice,"
                " grp, rows, positives, threshold, roc_auc, supported) VALUES"
                " (%s, 'm', %s, %s, 'channel', 'online', 50, 2, 0.5, 0.7, true),"
                " (%s, 'm', %s, %s, 'channel', 'atm', 5, 0, 0.5, NULL, false)",
                (ds, version, ds, ds, version, ds),
            )
            drifted = ds == DRIFT_NIGHT
            cur.execute(
                f"INSERT INTO {SCHEMA}.drift_runs (ds, model_name, model_version, backend, drift, signals,"
                " min_signals, drifted_features, reference_rows, current_rows, summary)"
                " VALUES (%s, 'm', 1, 'scipy', %s, %s, 2, %s, 100, 100, 's')",
                (ds, drifted, 3 if drifted else 0, ["amount_eur"] if drifted else []),
            )
            cur.execute(
                f"INSERT INTO {SCHEMA}.drift_reports (ds, feature, test, statistic, p_value, threshold, drifted,"
                " model_version) VALUES (%s, 'amount_eur', 'ks', %s, %s, 0.01, %s, 1)",
                (ds, 0.4 if drifted else 0.02, 1e-9 if drifted else 0.5, drifted),
            )
            cur.execute(
                f"INSERT INTO {SCHEMA}.retraining_decisions (ds, model_name, model_version, triggered, reason,"
                " drifted_features, trigger_state) VALUES (%s, 'm', 1, %s, %s, %s, %s)",
                (
                    ds,
                    drifted,
                    "drift: amount_eur" if drifted else "no drift",
                    ["amount_eur"] if drifted else [],
                    "confirmed" if drifted else None,
                ),
            )
        for version, previous, triggered_by, decision, moved in (
            (1, None, "manual", "first champion", "2026-02-28 10:00+00"),
            (2, 1, "drift_monitor", "promoted: roc_auc +0.02 over v1", "2026-03-04 10:00+00"),
            (1, 2, "rollback: bad release", "rollback from v2 to v1", "2026-03-05 10:00+00"),
        ):
            cur.execute(
                f"INSERT INTO {SCHEMA}.model_alias_history (model_name, alias, version, previous_version, run_id,"
                " moved_at, triggered_by, reason, decision, metrics) VALUES ('m', 'champion', %s, %s, 'r', %s, %s,"
                " 'r', %s, %s)",
                (version, previous, moved, triggered_by, decision, json.dumps({})),
            )
        # A shadow v3 compared on the last two days, a retraining scheduled at label maturity, an open request.
        for ds, diff in ((DAYS[-2], 0.03), (DAYS[-1], 0.05)):
            cur.execute(
                f"INSERT INTO {SCHEMA}.shadow_evaluations (ds, model_name, shadow_version, champion_version,"
                " evaluated_on, slice, grp, rows, positives, shadow_roc_auc, champion_roc_auc, difference, ci_low,"
                " ci_high, supported) VALUES (%s, 'm', 3, 1, %s, 'all', 'all', 800, 30, %s, 0.85, %s, %s, %s, true)",
                (ds, ds + dt.timedelta(days=5), 0.85 + diff, diff, diff - 0.02, diff + 0.02),
            )
        cur.execute(
            f"INSERT INTO {SCHEMA}.scheduled_retrainings (model_name, drift_ds, due_on, reason)"
            " VALUES ('m', %s, %s, 'pattern drift')",
            (DRIFT_NIGHT, DRIFT_NIGHT + dt.timedelta(days=5)),
        )
        cur.execute(
            f"INSERT INTO {SCHEMA}.promotion_requests (model_name, version, champion_version, requested_on,"
            " evidence) VALUES ('m', 3, 1, %s, '{}')",
            (DAYS[-1],),
        )
    conn.close()
    # The ingest accounting through its real writer, as feature_pipeline.record_ingest writes it (the loader).
    loader = postgres.connect_loader()
    try:
        for i, ds in enumerate(DAYS):
            assert ingest_runs.record(
                loader, SCHEMA, ingest_runs.row(_ingested(ds, i), published_by="feature_pipeline")
            )
    finally:
        loader.close()
    return postgres


def _ingested(ds: dt.date, i: int, version: str | None = None) -> dict:
    """An ingest result as ``spark_jobs.ingest.run`` returns it: counts per kind (its ``KindCounts``)."""
    from spark_jobs.ingest import KindCounts

    # The drift night's drop carries broken amounts: its quarantine rate stands out.
    bad = 40 if ds == DRIFT_NIGHT else i
    tx = KindCounts(files=1, rows_written=1000 - bad, duplicates_dropped=2, rows_quarantined=bad)
    tx.rows_read = tx.rows_written + tx.duplicates_dropped + tx.rows_quarantined
    tx.quarantined_by_reason = {"amount_not_numeric": bad} if bad else {}
    labels = KindCounts(files=1, rows_read=30, rows_written=30)
    return {
        "ds": str(ds),
        "version": version or f"{ds:%Y%m%d}T010000000000Z-0000000{i}",
        "transactions": tx.__dict__ | {"quarantine_rate": tx.quarantine_rate},
        "labels": labels.__dict__ | {"quarantine_rate": 0.0},
    }


def test_the_analyst_role_reads_every_section(history):
    conn = history.connect(history.roles.analyst)
    try:
        conn.set_session(readonly=True)
        data = health.gather(conn, SCHEMA, days=30, today=DAYS[-1])
    finally:
        conn.close()
    assert [r["ds"] for r in data.performance] == DAYS
    assert data.performance[0]["reference_roc_auc"] == pytest.approx(0.9)
    assert {(r["slice"], r["grp"]) for r in data.slices} == {("channel", "online")}  # unsupported groups left out
    assert [n["ds"] for n in data.nights if n["triggered"]] == [DRIFT_NIGHT]
    assert [r["ds"] for r in data.drift if r["drifted"]] == [DRIFT_NIGHT]
    assert [r["rows_scored"] for r in data.volumes] == [100] * len(DAYS)
    assert data.volumes[-1]["alert_rate"] == pytest.approx(0.10)
    shares = {}
    for row in data.scores:
        shares[row["ds"]] = shares.get(row["ds"], 0) + row["share"]
    assert len(shares) == len(DAYS)
    assert all(share == pytest.approx(1.0) for share in shares.values())
    assert [c["kind"] for c in data.champions] == ["first", "promotion", "rollback"]
    assert [r["ds"] for r in data.ingest] == DAYS
    night = data.ingest[DAYS.index(DRIFT_NIGHT)]
    assert (night["rows_read"], night["rows_published"], night["rows_quarantined"]) == (1002, 960, 40)
    assert night["quarantine_rate"] == pytest.approx(40 / 1002)
    assert night["quarantined_by_reason"] == {"amount_not_numeric": 40}
    assert [(r["ds"], r["shadow_version"]) for r in data.evidence] == [(DAYS[-2], 3), (DAYS[-1], 3)]
    assert [r["due_on"] for r in data.pending] == [DRIFT_NIGHT + dt.timedelta(days=5)]
    assert [(r["version"], r["champion_version"]) for r in data.requests] == [(3, 1)]

    # Older days than the window are left out.
    conn = history.connect(history.roles.analyst)
    try:
        recent = health.gather(conn, SCHEMA, days=2, today=DAYS[-1])
    finally:
        conn.close()
    assert [r["ds"] for r in recent.performance] == DAYS[-3:]
    # Without a date, the window ends at the newest day recorded (a replayed history shows too).
    conn = history.connect(history.roles.analyst)
    try:
        assert health.latest_day(conn, SCHEMA) == DAYS[-1]
        assert [r["ds"] for r in health.gather(conn, SCHEMA, days=1).performance] == DAYS[-2:]
    finally:
        conn.close()


def test_the_page_draws_every_section_and_marks_the_trigger_night(history):
    conn = history.connect(history.roles.analyst)
    try:
        data = health.gather(conn, SCHEMA, days=30, today=DAYS[-1])
    finally:
        conn.close()
    page = health.render(data)
    for key, *_ in health.SECTIONS:
        assert f'id="chart-{key}"' in page, key
    assert "retraining triggered" in page
    assert f"retraining triggered on {DRIFT_NIGHT}" in page
    # the champion chart marks the first champion, the promotion and the rollback, each its own trace
    assert [trace.name for trace in health.champion_figure(data).data] == [
        "champion version",
        "first",
        "promotion",
        "rollback",
    ]
    assert "1 retraining(s) scheduled, 1 promotion request(s) open" in page
    assert f"scheduled for {DRIFT_NIGHT + dt.timedelta(days=5)}" in page
    assert "promotion request #" in page
    assert "shadow v3 - champion" in page
    head = page.split("<body>")[0]
    assert "https://" not in head  # plotly.js is served locally, never from a CDN
    assert f"src='{health.HEALTH_PREFIX}/{health.PLOTLY_JS}'" in head


def test_the_ingest_chart_plots_volumes_and_quarantine_rate_per_day(history):
    conn = history.connect(history.roles.analyst)
    try:
        data = health.gather(conn, SCHEMA, days=30, today=DAYS[-1])
    finally:
        conn.close()
    traces = {trace.name: trace for trace in health.ingest_figure(data).data}
    assert list(traces["published"].x) == [str(d) for d in DAYS]
    assert list(traces["published"].y) == [1000 - (40 if d == DRIFT_NIGHT else i) for i, d in enumerate(DAYS)]
    assert list(traces["quarantined"].y) == [40 if d == DRIFT_NIGHT else i for i, d in enumerate(DAYS)]
    rates = list(traces["quarantine rate"].y)
    assert max(rates) == rates[DAYS.index(DRIFT_NIGHT)] == pytest.approx(40 / 1002)
    assert "amount_not_numeric: 40" in traces["quarantined"].text[DAYS.index(DRIFT_NIGHT)]
    assert health.ingest_figure(data).layout.xaxis.dtick == health.DAY_MS  # a week: one tick per day
    page = health.render(data)
    assert 'id="chart-ingest"' in page
    assert f"{len(DAYS)} ingested day(s)" in page


def test_ingest_rows_are_idempotent_per_day_and_never_go_back_a_version(history):
    day = dt.date(2026, 4, 1)
    loader = history.connect_loader()
    try:
        newer = ingest_runs.row(_ingested(day, 3, "20260402T000000000000Z-bbbbbbbb"), published_by="backfill_range")
        older = ingest_runs.row(_ingested(day, 5, "20260401T000000000000Z-aaaaaaaa"), published_by="feature_pipeline")
        assert ingest_runs.record(loader, SCHEMA, newer)
        assert ingest_runs.record(loader, SCHEMA, newer)  # a retry rewrites the same row
        assert not ingest_runs.record(loader, SCHEMA, older)  # a superseded publish changes nothing
    finally:
        loader.close()
    rows = history.query(
        f"SELECT raw_version, rows_quarantined, published_by FROM {SCHEMA}.ingest_runs WHERE ds = %s", day
    )
    assert rows == [("20260402T000000000000Z-bbbbbbbb", 3, "backfill_range")]
    conn = history.connect()
    with conn, conn.cursor() as cur:  # the other tests' window stays as seeded
        cur.execute(f"DELETE FROM {SCHEMA}.ingest_runs WHERE ds = %s", (day,))
    conn.close()


def test_an_empty_schema_says_why_each_chart_is_missing(postgres):
    postgres.migrate("health_empty")
    conn = postgres.connect(postgres.roles.analyst)
    try:
        data = health.gather(conn, "health_empty")
    finally:
        conn.close()
    assert data.empty
    page = health.render(data)
    assert "chart-" not in page
    assert "No drift_monitor night recorded yet" in page
    assert "No scheduled retraining or promotion request is waiting" in page


def test_a_schema_that_is_not_an_identifier_is_refused(postgres):
    conn = postgres.connect(postgres.roles.analyst)
    try:
        with pytest.raises(ValueError, match="identifier"):
            health.drift(conn, "x; DROP TABLE y", dt.date(2026, 1, 1))
    finally:
        conn.close()


def test_plotly_js_is_bundled():
    js = health.plotly_js()
    assert len(js) > 1_000_000
    assert "plotly" in js[:2000].lower()


# ---------------------------------------------------------------------------------------------------------
# The page as the plugin serves it beside the UI


def _plugin():
    spec = importlib.util.spec_from_file_location("loopline_plugin_health", REPO / "plugins" / "loopline_plugin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def served(history, airflow_db):
    """A test client of the health app mounted where the API server mounts it, reading ``SCHEMA`` as the analyst."""
    from airflow.api_fastapi.app import init_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    analyst = json.loads(history.airflow_conn)
    analyst["login"] = history.roles.analyst
    env = {"AIRFLOW_CONN_LOOPLINE_POSTGRES_ANALYST": json.dumps(analyst), "LOOPLINE__POSTGRES__SCHEMA": SCHEMA}
    os.environ.update(env)
    get_config.cache_clear()
    plugin = _plugin()
    api = FastAPI()
    api.mount(health.HEALTH_PREFIX, plugin.health_app())
    token = init_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
    try:
        yield lambda logged_in: TestClient(api, cookies={"_token": token} if logged_in else None)
    finally:
        for name in env:
            os.environ.pop(name)
        get_config.cache_clear()


def test_the_plugin_serves_the_page_only_behind_the_login(served):
    with served(False) as anonymous:
        assert anonymous.get(f"{health.HEALTH_PREFIX}/").status_code == 401
        assert anonymous.get(f"{health.HEALTH_PREFIX}/{health.PLOTLY_JS}").status_code == 401
    with served(True) as client:
        page = client.get(f"{health.HEALTH_PREFIX}/")
        assert page.status_code == 200
        assert 'id="chart-drift"' in page.text
        assert f"retraining triggered on {DRIFT_NIGHT}" in page.text
        js = client.get(f"{health.HEALTH_PREFIX}/{health.PLOTLY_JS}")
        assert js.status_code == 200
        assert js.headers["content-type"].startswith("text/javascript")


def test_without_the_analyst_connection_the_page_says_which_is_missing(served):
    os.environ.pop("AIRFLOW_CONN_LOOPLINE_POSTGRES_ANALYST")
    with served(True) as client:
        answer = client.get(f"{health.HEALTH_PREFIX}/")
    assert answer.status_code == 503
    assert "loopline_postgres_analyst" in answer.json()["detail"]
    os.environ["AIRFLOW_CONN_LOOPLINE_POSTGRES_ANALYST"] = "{}"  # the fixture's teardown pops it

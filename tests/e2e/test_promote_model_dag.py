"""Shadow first, then a person: drift_monitor (`dag.test()`) judges the shadow against the champion on the same
matured transactions and raises a promotion request; promote_model (`dag.test()`) waits in Airflow's
human-in-the-loop state until the request is answered through the HITL REST route of a real api-server on the
same metadata database, as a named user. Real MLflow store, real Postgres, real models scoring a synthetic lake:
the weak model is three XGBoost stumps on a tenth of the features, the strong one sixty rounds."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from loopline import lake as tables
from loopline.config import get_config
from loopline.lake import Lake
from tests.conftest import (
    REPO,
    SESSION_HOME,
    dag_environment,
    environment,
    free_port,
    load_dag,
    run_day,
    stop,
    wait_for_port,
)
from tests.lineage_support import file_transport, openlineage_conf_reset

pytestmark = pytest.mark.e2e

START = dt.date(2026, 1, 1)
MATURITY = 5
ROWS = 3000
NAME = "loopline-shadow-e2e"
SCHEMA = "shadow_e2e"
NIGHTS = [START + dt.timedelta(days=MATURITY + i) for i in range(2)]  # the scored days START, START+1 mature
APPROVER = "approver"
APPROVER_KEY = secrets.token_urlsafe(16)  # a throwaway user of the test api-server, its password


def _models():
    """A weak model (three stumps on a tenth of the features) and a strong one (sixty rounds)."""
    from loopline.training.models import TrainParams, train_model
    from tests.models import fit, training_frame

    features, labels = training_frame(seed=5)
    split = int(len(features) * 0.8)
    stumps = TrainParams(max_rounds=3, max_depth=1, colsample_bytree=0.1, seed=5)
    weak = train_model(
        "xgboost", features[:split], labels[:split], features[split:], labels[split:], stumps, device="cpu"
    )
    return weak, fit("xgboost", seed=5, rounds=60)


def _register(model, root: Path, name: str, alias: str, postgres) -> int:
    """Register ``model`` under ``alias`` and record its digests, as the gate would have."""
    from mlflow import MlflowClient

    from loopline import artifacts
    from tests.models import register

    uri = f"sqlite:///{root / 'mlflow.db'}"
    version = register(model, uri, root / "artifacts", name, alias)
    fetched = artifacts.fetch(
        MlflowClient(uri), name, version, root / f"fetch-{name}-{version}", conn=None, schema=None,
        require_digests=False,
    )  # fmt: skip
    conn = postgres.connect()
    try:
        artifacts.record_digests(conn, SCHEMA, name, version, fetched.digests)
        conn.commit()
    finally:
        conn.close()
    return version


def _score_days(lake_root: Path, table: str, model, name: str, version: int, days: list[dt.date]) -> None:
    from mlflow import MlflowClient

    from loopline.scoring import score_batch
    from loopline.training.synthetic import write_partition

    run_id = MlflowClient(get_config().mlflow.tracking_uri).get_model_version(name, str(version)).run_id
    lake = Lake(str(lake_root))
    for day in days:
        features = pd.read_parquet(lake.partition(tables.FEATURES, day))
        scores = score_batch(model, features, threshold=0.2, explain="none", reason_codes=0)
        scores.insert(0, "ds", day)
        scores["threshold"] = 0.2
        scores["model_name"] = name
        scores["model_version"] = version
        scores["model_run_id"] = run_id
        scores["scored_at"] = pd.Timestamp("2026-02-01", tz="UTC")
        write_partition(lake, table, day, scores)


def _lake(root: Path, name: str, champion, shadow, postgres) -> tuple[int, int]:
    from loopline.training.synthetic import write_synthetic_lake

    write_synthetic_lake(root / "lake", START, MATURITY + 3, rows_per_day=ROWS, seed=21)
    champion_version = _register(champion, root, name, "champion", postgres)
    shadow_version = _register(shadow, root, name, "shadow", postgres)
    scored = [START, START + dt.timedelta(days=1)]
    _score_days(root / "lake", tables.SCORES, champion, name, champion_version, scored)
    _score_days(root / "lake", tables.SCORES_SHADOW, shadow, name, shadow_version, scored)
    return champion_version, shadow_version


@pytest.fixture(scope="module")
def loop(airflow_db, postgres, tmp_path_factory):
    root = tmp_path_factory.mktemp("promotion")
    overrides = {
        **dag_environment(root, SCHEMA, NAME, sensor_timeout=2),
        **file_transport(root / "events.jsonl"),  # what `loopline up` sets: OpenLineage's file transport
        "LOOPLINE__FEATURES__LABEL_MATURITY_DAYS": str(MATURITY),
        "LOOPLINE__PROMOTION__POLICY": "shadow_first",
        "LOOPLINE__PROMOTION__MIN_DAYS": "2",
        "LOOPLINE__PROMOTION__MIN_POSITIVES": "20",
        "LOOPLINE__PROMOTION__BOOTSTRAP_SAMPLES": "300",
    }
    with environment(overrides):
        openlineage_conf_reset()
        postgres.migrate(SCHEMA)
        weak, strong = _models()
        champion, shadow = _lake(root, NAME, weak, strong, postgres)
        yield {
            "root": root,
            "postgres": postgres,
            "drift": load_dag("drift_monitor"),
            "promote": load_dag("promote_model"),
            "champion": champion,
            "shadow": shadow,
            "models": (weak, strong),
        }
    openlineage_conf_reset()


@pytest.fixture(scope="module")
def api_server(loop):
    """A real api-server on this session's metadata database, with one user who may approve."""
    port = free_port()
    passwords = SESSION_HOME / "approver-passwords.json"
    passwords.write_text(json.dumps({APPROVER: APPROVER_KEY}))
    env = {
        **os.environ,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{APPROVER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
    }
    log = SESSION_HOME / "api-server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "airflow"), "api-server", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, 180, process, log)
        from loopline.stack import AirflowApi

        api = AirflowApi(f"http://127.0.0.1:{port}", user=APPROVER, password=APPROVER_KEY, timeout=60)
        deadline = time.monotonic() + 120
        while True:  # the port opens before the app answers
            try:
                api.request("GET", "/api/v2/monitor/health")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        yield api
    finally:
        stop(process)


def _answer_when_asked(api, option: str, answered: dict) -> threading.Thread:
    """A person at the UI: waits for the approval to be asked, then answers it through the REST route."""

    def run() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                pending = api.pending_approvals("promote_model")
            except RuntimeError:
                pending = []
            if pending:
                answered["body"] = pending[0]["body"]
                answered["response"] = api.answer(pending[0], option)
                return
            time.sleep(1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _test_run(dag, conf: dict):
    dagrun = dag.test(run_conf=conf)
    return dagrun, {ti.task_id: ti.state for ti in dagrun.get_task_instances()}


def _alias(name: str, alias: str) -> int | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return int(MlflowClient(get_config().mlflow.tracking_uri).get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def test_a_winning_shadow_is_promoted_only_once_a_person_approves(loop, api_server):
    from mlflow import MlflowClient

    pg, drift = loop["postgres"], loop["drift"]
    _, states = run_day(drift, NIGHTS[0])
    assert states["compare_shadow"] == "success", states
    assert states["skip_promotion_request"] == "success"  # one day: the evidence is still building
    evaluated = pg.query(
        f"SELECT ds, shadow_version, champion_version, rows, positives, difference FROM {SCHEMA}.shadow_evaluations "
        "WHERE slice = 'all'"
    )
    assert [(row[0], row[1], row[2]) for row in evaluated] == [(START, loop["shadow"], loop["champion"])]
    assert evaluated[0][3] > 300  # the day's transactions labelled within 5 days, both models on each
    assert pg.query(f"SELECT count(*) FROM {SCHEMA}.promotion_requests") == [(0,)]

    _, states = run_day(drift, NIGHTS[1])
    assert states["request_promotion"] == "success", states
    requests = pg.query(f"SELECT id, version, champion_version, state, evidence FROM {SCHEMA}.promotion_requests")
    request_id, version, champion, state, evidence = requests[0]
    assert (version, champion, state) == (loop["shadow"], loop["champion"], "open")
    assert evidence["days"] == 2
    assert evidence["ci_low"] > 0, evidence  # the strong model wins on the same transactions
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        triggered = session.query(DagRun).filter(DagRun.dag_id == "promote_model").one()
        assert triggered.run_id == f"promote_model__v{version}"
        assert dict(triggered.conf)["request_id"] == request_id
        conf = dict(triggered.conf)
    # Asked, not promoted: the champion serves until a person answers.
    assert _alias(NAME, "champion") == loop["champion"]

    answered: dict = {}
    person = _answer_when_asked(api_server, "Approve", answered)
    _, states = _test_run(loop["promote"], conf)
    person.join(timeout=10)
    assert answered, "the approval was never asked"
    assert "paired bootstrap" in answered["body"]
    assert "model_card.md" in answered["body"] or "Model card" in answered["body"]
    assert states == {
        "check_request": "success",
        "approve_promotion": "success",
        "promote_shadow": "success",
        "settle_request": "success",
    }, states
    assert _alias(NAME, "champion") == loop["shadow"]
    assert _alias(NAME, "shadow") is None
    history = pg.query(
        f"SELECT alias, action, version, approved_by, approved_at IS NOT NULL, state, metrics ? 'shadow_evidence' "
        f"FROM {SCHEMA}.model_alias_history ORDER BY id"
    )
    assert ("champion", "move", loop["shadow"], APPROVER, True, "applied", True) in history
    assert ("shadow", "remove", loop["shadow"], None, False, "applied", False) in history
    assert pg.query(f"SELECT state, decided_by FROM {SCHEMA}.promotion_requests") == [("approved", APPROVER)]
    client = MlflowClient(get_config().mlflow.tracking_uri)
    run_id = client.get_model_version(NAME, str(loop["shadow"])).run_id
    card = Path(client.download_artifacts(run_id, "model_card.md", str(loop["root"]))).read_text()
    assert f"approved by {APPROVER}" in card

    # OpenLineage, from the events alone: both models' scores of the matured day and its labels -> the day's
    # shadow evaluation -> the night's promotion request -> the alias history of the approved move.
    from loopline import lineage

    graph = lineage.LineageGraph.from_events(lineage.read_events(loop["root"] / "events.jsonl"))
    ns = "loopline"
    evaluation = lineage.analyst(ns, "shadow_evaluations", START).key
    request = lineage.analyst(ns, "promotion_requests", NIGHTS[1]).key
    (moved_on,) = pg.query(
        f"SELECT (moved_at AT TIME ZONE 'UTC')::date FROM {SCHEMA}.model_alias_history "
        "WHERE alias = 'champion' AND action = 'move' AND approved_by IS NOT NULL"
    )[0]
    moved = lineage.analyst(ns, "model_alias_history", moved_on).key  # the day the move was recorded
    shadow_scores = lineage.lake(ns, tables.SCORES_SHADOW, START).key
    assert {
        lineage.lake(ns, tables.SCORES, START).key,
        shadow_scores,
        lineage.lake(ns, tables.LABELED_TRANSACTIONS, NIGHTS[0]).key,
        lineage.model_version(ns, NAME, loop["shadow"]).key,
        lineage.model_version(ns, NAME, loop["champion"]).key,
    } <= graph.producers[evaluation]
    assert graph.jobs[evaluation] == {"drift_monitor.compare_shadow"}
    assert lineage.lake(ns, tables.SCORES_SHADOW, START + dt.timedelta(days=1)).key in graph.producers[request]
    assert graph.jobs[request] == {"drift_monitor.compare_shadow"}
    assert {request, lineage.model_version(ns, NAME, loop["shadow"]).key} <= graph.producers[moved]
    assert graph.jobs[moved] == {"promote_model.promote_shadow"}
    assert graph.path(shadow_scores, moved) is not None

    # Rollback stays one command.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO)])}
    rolled = subprocess.run(
        [sys.executable, "-m", "loopline", "model", "rollback", "--reason", "approved too early"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert rolled.returncode == 0, rolled.stderr[-2000:]
    assert f"champion is v{loop['champion']} again" in rolled.stdout
    assert _alias(NAME, "champion") == loop["champion"]


def _open_request(loop) -> tuple[int, int, list[tuple]]:
    """A new shadow with an open promotion request: its version, the request and the champion's history count."""
    from loopline import promotion

    pg = loop["postgres"]
    _, strong = loop["models"]
    version = _register(strong, loop["root"], NAME, "shadow", pg)
    conn = pg.connect_loader()
    try:
        request_id = promotion.raise_request(
            conn, SCHEMA, model_name=NAME, version=version, champion_version=loop["champion"],
            requested_on=NIGHTS[1], evidence={"days": 2, "rows": 100, "positives": 30, "difference": 0.01},
        )  # fmt: skip
    finally:
        conn.close()
    champion_rows = pg.query(f"SELECT count(*) FROM {SCHEMA}.model_alias_history WHERE alias = 'champion'")
    return version, request_id, champion_rows


def test_a_rejected_request_promotes_nothing(loop, api_server):
    pg = loop["postgres"]
    version, request_id, champion_rows = _open_request(loop)
    answered: dict = {}
    person = _answer_when_asked(api_server, "Reject", answered)
    _, states = _test_run(loop["promote"], {"request_id": request_id, "version": version})
    person.join(timeout=10)
    assert answered
    assert states["approve_promotion"] == "success"
    assert states["promote_shadow"] == "skipped"
    assert states["settle_request"] == "success"
    assert _alias(NAME, "champion") == loop["champion"]
    assert pg.query(f"SELECT count(*) FROM {SCHEMA}.model_alias_history WHERE alias = 'champion'") == champion_rows
    assert pg.query(f"SELECT state, decided_by FROM {SCHEMA}.promotion_requests WHERE id = %s", request_id) == [
        ("rejected", APPROVER)
    ]


def _scheduler_timeout_sweep(dag_id: str, done: threading.Event) -> threading.Thread:
    """The scheduler's own sweep of Human-in-the-loop tasks whose response deadline passed
    (``SchedulerJobRunner.check_awaiting_input_timeouts``, on the scheduler's interval): ``dag.test()`` parks an
    approval in *awaiting input* and leaves resolving its timeout to the scheduler."""

    def run() -> None:
        from airflow.jobs.job import Job
        from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

        runner = SchedulerJobRunner(job=Job())
        deadline = time.monotonic() + 300
        while not done.is_set() and time.monotonic() < deadline:
            runner.check_awaiting_input_timeouts()
            time.sleep(1)

    thread = threading.Thread(target=run, daemon=True, name=f"{dag_id}-timeout-sweep")
    thread.start()
    return thread


def test_an_unanswered_request_times_out_and_promotes_nothing(loop, monkeypatch):
    """Nobody answers within ``promotion.approval_timeout_hours`` (seconds here): the approval fails, nothing is
    promoted, the request ends ``timed_out`` and the shadow keeps its alias (it keeps being judged)."""
    pg = loop["postgres"]
    version, request_id, champion_rows = _open_request(loop)
    monkeypatch.setenv("LOOPLINE__PROMOTION__APPROVAL_TIMEOUT_HOURS", str(3 / 3600))  # three seconds
    get_config.cache_clear()
    try:
        dag = load_dag("promote_model")  # the DAG takes its response timeout from the configuration
        assert dag.get_task("approve_promotion").response_timeout == dt.timedelta(seconds=3)
        done = threading.Event()
        sweep = _scheduler_timeout_sweep("promote_model", done)
        try:
            _, states = _test_run(dag, {"request_id": request_id, "version": version})
        finally:
            done.set()
            sweep.join(timeout=10)
    finally:
        get_config.cache_clear()
    assert states == {
        "check_request": "success",
        "approve_promotion": "failed",
        "promote_shadow": "upstream_failed",
        "settle_request": "success",
    }, states
    assert _alias(NAME, "champion") == loop["champion"]
    assert _alias(NAME, "shadow") == version
    assert pg.query(f"SELECT count(*) FROM {SCHEMA}.model_alias_history WHERE alias = 'champion'") == champion_rows
    state, decided_by, note = pg.query(
        f"SELECT state, decided_by, note FROM {SCHEMA}.promotion_requests WHERE id = %s", request_id
    )[0]
    assert (state, decided_by) == ("timed_out", "promote_model")
    assert "promotion.approval_timeout_hours" in note


def test_bad_requests_promote_nothing_and_say_why(loop):
    from mlflow import MlflowClient

    from loopline import promotion

    pg = loop["postgres"]
    _, strong = loop["models"]
    client = MlflowClient(get_config().mlflow.tracking_uri)
    version = _register(strong, loop["root"], NAME, "shadow", pg)
    conn = pg.connect_loader()
    try:
        request_id = promotion.raise_request(
            conn, SCHEMA, model_name=NAME, version=version, champion_version=loop["champion"],
            requested_on=NIGHTS[1], evidence={"days": 2},
        )  # fmt: skip
        with pytest.raises(promotion.PromotionError, match=rf"already has promotion request #{request_id} \(open"):
            promotion.raise_request(
                conn, SCHEMA, model_name=NAME, version=version, champion_version=loop["champion"],
                requested_on=NIGHTS[1], evidence={"days": 3},
            )  # fmt: skip
        # No longer the shadow (another version took the alias): refused, nothing promoted.
        client.set_registered_model_alias(NAME, "shadow", str(loop["shadow"]))
        with pytest.raises(promotion.PromotionError, match=rf"v{version} is no longer the shadow"):
            promotion.promote_shadow(client, conn, SCHEMA, request_id, approved_by="x", approved_at="now")
        assert _alias(NAME, "champion") == loop["champion"]
        # The shadow's files are gone: refused before anyone is asked, the request retired.
        client.set_registered_model_alias(NAME, "shadow", str(version))
        source = Path(client.get_model_version_download_uri(NAME, str(version)).removeprefix("file://"))
        shutil.rmtree(source)
    finally:
        conn.close()
    _, states = _test_run(loop["promote"], {"request_id": request_id, "version": version})
    assert states["check_request"] == "failed", states
    assert states["approve_promotion"] == "upstream_failed"
    assert _alias(NAME, "champion") == loop["champion"]
    state, note = pg.query(f"SELECT state, note FROM {SCHEMA}.promotion_requests WHERE id = %s", request_id)[0]
    assert state == "retired"
    assert "missing or changed" in note


def test_a_losing_shadow_is_retired(loop, postgres, tmp_path, monkeypatch):
    root = tmp_path
    name = "loopline-shadow-loses"
    monkeypatch.setenv("LOOPLINE__STORAGE__LAKE_URI", str(root / "lake"))
    monkeypatch.setenv("LOOPLINE__MLFLOW__TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    monkeypatch.setenv("LOOPLINE__MLFLOW__ARTIFACT_URI", str(root / "artifacts"))
    monkeypatch.setenv("LOOPLINE__MLFLOW__REGISTERED_MODEL", name)
    get_config.cache_clear()
    weak, strong = loop["models"]
    champion, shadow = _lake(root, name, strong, weak, postgres)  # now the shadow is the weak one
    try:
        for night in NIGHTS:
            _, states = run_day(loop["drift"], night)
            assert states["compare_shadow"] == "success", states
        assert _alias(name, "shadow") is None
        assert _alias(name, "champion") == champion
        retired = postgres.query(
            f"SELECT action, version, decision FROM {SCHEMA}.model_alias_history WHERE model_name = %s AND "
            "alias = 'shadow' AND state = 'applied' ORDER BY id",
            name,
        )
        assert retired[-1][:2] == ("remove", shadow)
        assert "the shadow loses" in retired[-1][2]
        assert postgres.query(f"SELECT count(*) FROM {SCHEMA}.promotion_requests WHERE model_name = %s", name) == [(0,)]
    finally:
        get_config.cache_clear()


def test_a_shadow_is_judged_only_on_days_after_its_training_data(loop, postgres, tmp_path, monkeypatch):
    """The shadow's training run says its data ends on START: that day is in sample and never evidence,
    however well the shadow scores it; START + 1 is the first day compared."""
    from mlflow import MlflowClient

    root = tmp_path
    name = "loopline-shadow-in-sample"
    monkeypatch.setenv("LOOPLINE__STORAGE__LAKE_URI", str(root / "lake"))
    monkeypatch.setenv("LOOPLINE__MLFLOW__TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    monkeypatch.setenv("LOOPLINE__MLFLOW__ARTIFACT_URI", str(root / "artifacts"))
    monkeypatch.setenv("LOOPLINE__MLFLOW__REGISTERED_MODEL", name)
    get_config.cache_clear()
    weak, strong = loop["models"]
    _champion, shadow = _lake(root, name, weak, strong, postgres)
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    client.log_param(client.get_model_version(name, str(shadow)).run_id, "fingerprint.mature_end", str(START))
    evaluated = f"SELECT ds FROM {SCHEMA}.shadow_evaluations WHERE model_name = %s AND slice = 'all' ORDER BY ds"
    try:
        _, states = run_day(loop["drift"], NIGHTS[0])
        assert states["compare_shadow"] == "success", states
        assert postgres.query(evaluated, name) == []
        _, states = run_day(loop["drift"], NIGHTS[1])
        assert states["skip_promotion_request"] == "success", states
        assert postgres.query(evaluated, name) == [(START + dt.timedelta(days=1),)]
        # One out-of-sample day is fewer than promotion.min_days: still building, nothing requested.
        assert _alias(name, "shadow") == shadow
        assert postgres.query(f"SELECT count(*) FROM {SCHEMA}.promotion_requests WHERE model_name = %s", name) == [(0,)]
    finally:
        get_config.cache_clear()


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO)])}
    return subprocess.run(
        [sys.executable, "-m", "loopline", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_an_inconclusive_shadow_is_retired_after_max_days_and_by_hand(loop, postgres, tmp_path, monkeypatch):
    """Twin models: the paired difference is exactly zero, no verdict ever comes. After
    ``promotion.max_shadow_days`` compared days drift_monitor retires the shadow; an operator can retire one at
    any time with ``loopline model retire-shadow``."""
    root = tmp_path
    name = "loopline-shadow-twin"
    monkeypatch.setenv("LOOPLINE__STORAGE__LAKE_URI", str(root / "lake"))
    monkeypatch.setenv("LOOPLINE__MLFLOW__TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    monkeypatch.setenv("LOOPLINE__MLFLOW__ARTIFACT_URI", str(root / "artifacts"))
    monkeypatch.setenv("LOOPLINE__MLFLOW__REGISTERED_MODEL", name)
    monkeypatch.setenv("LOOPLINE__PROMOTION__MAX_SHADOW_DAYS", "2")
    get_config.cache_clear()
    _, strong = loop["models"]
    champion, shadow = _lake(root, name, strong, strong, postgres)
    history = (
        f"SELECT action, version, triggered_by, decision FROM {SCHEMA}.model_alias_history "
        "WHERE model_name = %s AND alias = 'shadow' AND state = 'applied' ORDER BY id"
    )
    try:
        _, states = run_day(loop["drift"], NIGHTS[0])
        assert states["compare_shadow"] == "success", states
        assert _alias(name, "shadow") == shadow  # one day: still building
        _, states = run_day(loop["drift"], NIGHTS[1])
        assert states["skip_promotion_request"] == "success", states
        assert _alias(name, "shadow") is None
        assert _alias(name, "champion") == champion
        action, version, by, decision = postgres.query(history, name)[-1]
        assert (action, version, by) == ("remove", shadow, f"drift_monitor {NIGHTS[1]}")
        assert "inconclusive after 2 compared day(s)" in decision
        assert postgres.query(f"SELECT count(*) FROM {SCHEMA}.promotion_requests WHERE model_name = %s", name) == [(0,)]

        # By hand: nothing to retire, the wrong version, then the shadow (its open request retired with it).
        refused = _cli("model", "retire-shadow", "--reason", "no shadow")
        assert refused.returncode == 1
        assert f"{name} has no shadow: nothing retired" in refused.stderr
        again = _register(strong, root, name, "shadow", postgres)
        conn = postgres.connect_loader()
        try:
            from loopline import promotion

            request_id = promotion.raise_request(
                conn, SCHEMA, model_name=name, version=again, champion_version=champion,
                requested_on=NIGHTS[1], evidence={"days": 2},
            )  # fmt: skip
        finally:
            conn.close()
        wrong = _cli("model", "retire-shadow", "--reason", "wrong one", "--version", str(champion))
        assert wrong.returncode == 1
        assert f"v{champion} is not the shadow (v{again} is): nothing retired" in wrong.stderr
        assert _alias(name, "shadow") == again
        retired = _cli("model", "retire-shadow", "--reason", "inconclusive for a month", "--version", str(again))
        assert retired.returncode == 0, retired.stderr[-2000:]
        assert f"v{again} is no longer the shadow" in retired.stdout
        assert _alias(name, "shadow") is None
        assert _alias(name, "champion") == champion
        action, version, by, decision = postgres.query(history, name)[-1]
        assert (action, version) == ("remove", again)
        assert by.startswith("retire-shadow by ")
        assert "inconclusive for a month" in decision
        assert postgres.query(f"SELECT state FROM {SCHEMA}.promotion_requests WHERE id = %s", request_id) == [
            ("retired",)
        ]
    finally:
        get_config.cache_clear()

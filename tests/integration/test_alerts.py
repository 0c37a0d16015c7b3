"""Alerts through Airflow's notifiers: a real DAG run that fails mails the on-call through a real SMTP server,
a channel that is down fails nothing, and a missed deadline alerts through the triggerer's callback path."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from loopline.config import ConfigError, get_config, load_config
from loopline.orchestration import alerts
from tests.conftest import REPO, free_port
from tests.smtp_sink import start_smtp_sink

DAY = dt.date(2026, 6, 2)  # a day no other module runs feature_pipeline for (one run per logical date)


@pytest.fixture
def smtp(tmp_path):
    sink, server = start_smtp_sink()
    saved = dict(os.environ)
    alerts_file = tmp_path / "alerts.jsonl"
    smtp_extra = {"disable_ssl": True, "disable_tls": True, "from_email": "loopline@example.com", "retry_limit": 0}
    os.environ["AIRFLOW_CONN_LOOPLINE_SMTP"] = json.dumps(
        {"conn_type": "smtp", "host": sink.host, "port": sink.port, "extra": smtp_extra}
    )
    os.environ["AIRFLOW_CONN_LOOPLINE_SMTP_DOWN"] = json.dumps(  # nothing listens there
        {"conn_type": "smtp", "host": "127.0.0.1", "port": free_port(), "extra": {**smtp_extra, "timeout": 5}}
    )
    os.environ["LOOPLINE__ALERTS__CHANNELS"] = json.dumps(
        [
            {"type": "smtp", "conn_id": "loopline_smtp_down", "to": ["oncall@example.com"]},
            {"type": "smtp", "conn_id": "loopline_smtp", "to": ["oncall@example.com"]},
            {"type": "file", "path": str(alerts_file)},
        ]
    )
    os.environ["LOOPLINE__ALERTS__AIRFLOW_URL"] = "http://airflow.example:8080"
    get_config.cache_clear()
    alerts.DELIVERY_FAILURES.clear()
    yield sink, alerts_file
    server.shutdown()
    server.server_close()
    os.environ.clear()
    os.environ.update(saved)
    get_config.cache_clear()


def test_an_unknown_notifier_is_a_clear_error_at_config_load():
    with pytest.raises(ConfigError, match=r"alerts\.channels\.0.*(pager|tag)"):
        load_config(environ={"LOOPLINE__ALERTS__CHANNELS": '[{"type": "pager", "to": "x"}]'})
    with pytest.raises(ConfigError, match="HH:MM"):
        load_config(environ={"LOOPLINE__ALERTS__LATENESS__DROP_DUE": '"25:00"'})


def test_a_failed_run_mails_the_oncall_and_a_dead_channel_fails_nothing(smtp, airflow_db, tmp_path):
    """feature_pipeline for a day whose drop never came: wait_for_drop times out and fails the run; its
    failure callback (shared default args) sends through SmtpNotifier to a real SMTP server."""
    sink, alerts_file = smtp
    os.environ["AIRFLOW_CONN_LOOPLINE_LANDING_FS"] = json.dumps({"conn_type": "fs", "extra": {"path": ""}})
    os.environ["LOOPLINE__STORAGE__LANDING_URI"] = str(tmp_path / "landing")  # empty: the drop never came
    os.environ["LOOPLINE__VALIDATION__SENSOR_TIMEOUT_SECONDS"] = "2"
    os.environ["LOOPLINE__VALIDATION__SENSOR_POKE_SECONDS"] = "1"
    os.environ["LOOPLINE__VALIDATION__SENSOR_MODE"] = "reschedule"  # dag.test() runs triggers without timeouts
    get_config.cache_clear()
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags" / "feature_pipeline.py")).get_dag("feature_pipeline")
    dagrun = dag.test(logical_date=dt.datetime.combine(DAY, dt.time(), tzinfo=dt.UTC))
    states = {ti.task_id: ti.state for ti in dagrun.get_task_instances()}
    assert dagrun.state == "failed"
    assert states["wait_for_drop"] == "failed"  # failed, not errored by its callback

    assert len(sink.messages) == 1, [m.subject for m in sink.messages]
    mail = sink.messages[0]
    assert mail.recipients == ["oncall@example.com"]
    assert mail.subject.startswith(f"Loopline: feature_pipeline.wait_for_drop FAILED for ds={DAY}")
    body = mail.body()
    assert f"ds: {DAY}" in body
    assert "first check: `wait_for_drop` timed out" in body  # the DAG's own Triage line for the task
    link = alerts.run_url("feature_pipeline", dagrun.run_id, "wait_for_drop")
    assert link.startswith("http://airflow.example:8080/dags/feature_pipeline/runs/manual__")
    assert f"run: {link}" in body
    assert "landing drop incomplete" in body  # the error itself

    # The dead SMTP channel was logged and counted; the others still got the alert.
    assert alerts.DELIVERY_FAILURES["smtp"] == 1
    (line,) = alerts_file.read_text().splitlines()
    assert json.loads(line)["title"] == mail.subject


def test_a_late_drop_alerts_through_the_deadline_callback(smtp, airflow_db):
    """Airflow's own deadline path: the serialized DAG's deadline alert makes a scheduled run of a day whose
    drop never came get a deadline (its logical date + 1 day + drop_due); once past, the scheduler's miss
    handling queues the callback with the run's context, and the triggerer's CallbackTrigger runs it."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.deadline import Deadline
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.triggers.callback import CallbackTrigger
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from sqlalchemy import select

    sink, alerts_file = smtp
    os.environ["LOOPLINE__ALERTS__LATENESS__ENABLED"] = "true"  # off for the other tests' dag.test()
    get_config.cache_clear()
    cfg = get_config()
    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(REPO / "dags" / "feature_pipeline.py"))
    (alert,) = bag.get_dag("feature_pipeline").deadline
    assert alert.interval == dt.timedelta(days=1, hours=6)  # drop_due 06:00 on the day after ds
    assert alert.interval == cfg.alerts.lateness.due_after_ds(cfg.alerts.lateness.drop_due)
    # What the dag-processor does (at once: an earlier dag.test() in the session wrote this DAG moments ago).
    os.environ["AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL"] = "0"
    sync_bag_to_db(bag, "dags-folder", None)

    late_ds = DAY + dt.timedelta(days=1)
    logical = dt.datetime.combine(late_ds, dt.time(), tzinfo=dt.UTC)
    with create_session() as session:
        scheduler_dag = SerializedDagModel.get_dag("feature_pipeline", session=session)
        run = scheduler_dag.create_dagrun(  # the scheduler's run for the day; its drop never comes
            run_id=f"scheduled__{logical.isoformat()}",
            logical_date=logical,
            data_interval=(logical, logical + dt.timedelta(days=1)),
            run_after=logical + dt.timedelta(days=1),
            run_type=DagRunType.SCHEDULED,
            triggered_by=DagRunTriggeredByType.TIMETABLE,
            state="running",
            session=session,
        )
        session.flush()
        (deadline,) = session.scalars(
            select(Deadline).where(Deadline.dagrun_id == run.id, Deadline.deadline_time < dt.datetime.now(dt.UTC))
        ).all()
        assert deadline.deadline_time == logical + dt.timedelta(days=1, hours=6)
        deadline.handle_miss(session)  # what the scheduler does with a passed deadline
        session.flush()
        queued = dict(deadline.callback.data)
        session.rollback()  # leave the session's metadata database as it was
    trigger = CallbackTrigger(queued["path"], dict(queued["kwargs"]))

    async def events():
        return [event.payload async for event in trigger.run()]

    payloads = asyncio.run(events())
    assert payloads[-1]["state"] == "success", payloads
    assert payloads[-1]["body"] == 2  # the SMTP and file channels (the dead one is counted)

    mail = sink.messages[-1]
    assert mail.subject.startswith("Loopline LATE: the day's landing drop is not complete")
    assert f"ds={late_ds}" in mail.subject
    body = mail.body()
    assert "first check: the run's wait_for_drop task" in body
    assert f"run: {alerts.run_url('feature_pipeline', run.run_id)}" in body
    assert json.loads(alerts_file.read_text().splitlines()[-1])["kind"] == "late"

    # A backfilled day is created long after its due time: its deadline is missed at birth and not sent.
    context = queued["kwargs"]["context"]
    backfill = {**context, "dag_run": {**context["dag_run"], "run_type": "backfill"}}
    kwargs = {key: value for key, value in queued["kwargs"].items() if key != "context"}
    assert asyncio.run(alerts.deadline_missed(**kwargs, context=backfill)) == 0


def test_every_daily_dag_has_its_lateness_deadline_and_every_task_its_failure_alert(airflow_db, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("LOOPLINE__ALERTS__LATENESS__ENABLED", "true")
    get_config.cache_clear()

    bag = DagBag(dag_folder=str(REPO / "dags"))
    for dag_id in alerts.LATENESS:
        dag = bag.get_dag(dag_id)
        assert [d.name for d in dag.deadline] == [f"{dag_id}_late"]
        assert dag.deadline[0].interval == alerts.due_after_logical_date(dag_id)
    monkeypatch.undo()
    get_config.cache_clear()
    assert alerts.deadlines("feature_pipeline") == []  # off (as for dag.test()): no deadline at all
    for dag in bag.dags.values():
        for task in dag.tasks:
            callbacks = task.on_failure_callback or []
            assert any(isinstance(c, alerts.LooplineNotifier) for c in callbacks), f"{dag.dag_id}.{task.task_id}"


def test_the_triage_hint_is_the_dags_own_line_for_the_task():
    doc = "# x\n\n## Triage\n- `load_scores` failed: the transaction rolled back;\n  Postgres keeps the old day.\n"
    assert alerts.triage_hint(doc, "load_scores") == (
        "`load_scores` failed: the transaction rolled back; Postgres keeps the old day."
    )
    assert alerts.triage_hint(doc, "other_task") == alerts.GENERIC_CHECK


def test_the_drift_decision_goes_to_every_channel(smtp):
    sink, alerts_file = smtp

    class _TI:
        dag_id, run_id = "drift_monitor", "scheduled__2026-02-20T00:00:00+00:00"

        def xcom_pull(self, task_ids=None, key="return_value"):
            if task_ids == "detect_drift":
                return {"model_version": 3, "summary": "drift: 2 drifted feature(s)", "drift": True}
            return {"trigger": True, "reason": "data drift", "train_run_id": "drift_monitor__2026-02-20"}

    alerts.LooplineNotifier("drift").notify({"ti": _TI(), "ds": "2026-02-20"})
    assert "retraining TRIGGERED" in sink.messages[-1].subject
    assert "drift_monitor__2026-02-20" in sink.messages[-1].body()
    assert json.loads(alerts_file.read_text().splitlines()[-1])["details"]["drift"]["triggered"] is True
    assert alerts.DELIVERY_FAILURES["smtp"] == 1  # the dead channel again: counted, nothing raised
    assert Path(alerts_file).exists()


def test_the_gates_verdict_is_sent_as_a_promotion_alert(smtp):
    sink, alerts_file = smtp

    class _TI:
        dag_id, run_id, task_id = "train_model", "drift_monitor__2026-02-20", "gate_candidate"

        def xcom_pull(self, task_ids=None, key="return_value"):
            assert task_ids == "gate_candidate"
            return {"promoted": True, "alias": "champion", "version": 5, "reason": "beats v4 by 0.02 ROC AUC"}

    run = SimpleNamespace(
        conf={"ds": "2026-02-20", "triggered_by": "drift_monitor", "reason": "drift_monitor 2026-02-20: drift"}
    )
    alerts.LooplineNotifier("promotion").notify({"ti": _TI(), "dag_run": run})
    mail = sink.messages[-1]
    assert mail.subject.startswith("Loopline: loopline-fraud v5 PROMOTED to champion")
    body = mail.body()
    assert "ds: 2026-02-20" in body
    assert "loopline model rollback" in body
    assert "triggered_by: drift_monitor" in body
    assert json.loads(alerts_file.read_text().splitlines()[-1])["kind"] == "promotion"

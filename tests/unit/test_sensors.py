"""The landing sensor: one task for every marker of a drop, whose timeout names the missing one."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowSensorTimeout, TaskDeferred

from loopline.config import load_config
from loopline.orchestration.sensors import landing_sensor


def _local_sensor(tmp_path, monkeypatch, **env):
    # FileSensor joins each marker to the connection's path; "/" keeps absolute markers as they are
    monkeypatch.setenv("AIRFLOW_CONN_LOOPLINE_LANDING_FS", '{"conn_type": "fs", "extra": {"path": "/"}}')
    cfg = load_config(environ={"LOOPLINE__STORAGE__LANDING_URI": str(tmp_path), **env})
    sensor = landing_sensor(cfg)
    sensor.markers = [m.replace("{{ ds }}", "2026-01-05") for m in sensor.markers]  # as rendered for a run
    return sensor


def test_deferral_timeout_names_the_marker_and_what_to_do():
    from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason

    cfg = load_config(environ={"LOOPLINE__VALIDATION__SENSOR_TIMEOUT_SECONDS": "600"})
    sensor = landing_sensor(cfg)
    assert sensor.deferrable
    sensor.filepath = "/landing/transactions/ds=2026-01-05/_SUCCESS"  # the marker it deferred on
    with pytest.raises(AirflowSensorTimeout) as excinfo:
        sensor.resume_execution(TRIGGER_FAIL_REPR, {"error": TriggerFailureReason.TRIGGER_TIMEOUT}, context={})
    message = str(excinfo.value)
    assert (
        "landing drop incomplete: /landing/transactions/ds=2026-01-05/_SUCCESS did not appear within 0:10:00" in message
    )
    assert "clear this task" in message


def test_pokes_every_marker_and_waits_for_the_first_missing(tmp_path, monkeypatch):
    sensor = _local_sensor(tmp_path, monkeypatch)
    transactions, labels = (tmp_path / kind / "ds=2026-01-05" for kind in ("transactions", "labels"))
    assert sensor.poke(context={}) is False
    assert sensor.marker_path == str(transactions / "_SUCCESS")

    transactions.mkdir(parents=True)
    (transactions / "_SUCCESS").touch()
    assert sensor.poke(context={}) is False
    assert sensor.marker_path == str(labels / "_SUCCESS")  # the one a timeout would name

    labels.mkdir(parents=True)
    (labels / "_SUCCESS").touch()
    assert sensor.poke(context={}) is True


def test_defers_again_on_the_next_missing_marker(tmp_path, monkeypatch):
    sensor = _local_sensor(tmp_path, monkeypatch)
    transactions = tmp_path / "transactions" / "ds=2026-01-05"
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context={})
    assert deferred.value.trigger.filepath == str(transactions / "_SUCCESS")

    transactions.mkdir(parents=True)
    (transactions / "_SUCCESS").touch()
    # the trigger fired for transactions; labels are still missing: one more deferral, not success
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute_complete(context={}, event=True)
    assert deferred.value.trigger.filepath == str(tmp_path / "labels" / "ds=2026-01-05" / "_SUCCESS")

    labels = tmp_path / "labels" / "ds=2026-01-05"
    labels.mkdir(parents=True)
    (labels / "_SUCCESS").touch()
    sensor.execute_complete(context={}, event=True)  # every marker there: done


def test_reschedule_mode_is_configuration():
    cfg = load_config(environ={"LOOPLINE__VALIDATION__SENSOR_MODE": "reschedule"})
    sensor = landing_sensor(cfg)
    assert not sensor.deferrable
    assert sensor.mode == "reschedule"
    assert sensor.task_id == "wait_for_drop"

"""The landing sensor's deferral timeout, as the triggerer reports it, names the missing marker."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowSensorTimeout

from loopline.config import load_config
from loopline.orchestration.sensors import landing_sensor


def test_deferral_timeout_names_the_marker_and_what_to_do():
    from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason

    cfg = load_config(environ={"LOOPLINE__VALIDATION__SENSOR_TIMEOUT_SECONDS": "600"})
    sensor = landing_sensor(cfg, "transactions")
    assert sensor.deferrable
    sensor.filepath = "/landing/transactions/ds=2026-01-05/_SUCCESS"  # as rendered for a run
    with pytest.raises(AirflowSensorTimeout) as excinfo:
        sensor.resume_execution(TRIGGER_FAIL_REPR, {"error": TriggerFailureReason.TRIGGER_TIMEOUT}, context={})
    message = str(excinfo.value)
    assert (
        "landing drop incomplete: /landing/transactions/ds=2026-01-05/_SUCCESS did not appear within 0:10:00" in message
    )
    assert "clear this task" in message


def test_reschedule_mode_is_configuration():
    cfg = load_config(environ={"LOOPLINE__VALIDATION__SENSOR_MODE": "reschedule"})
    sensor = landing_sensor(cfg, "labels")
    assert not sensor.deferrable
    assert sensor.mode == "reschedule"
    assert sensor.task_id == "wait_for_labels"

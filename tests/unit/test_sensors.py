"""The landing sensor: one task for every marker of a drop, whose timeout names the missing one; which sensor
a landing or lake URI gets."""

from __future__ import annotations

import pytest
from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor
from airflow.providers.standard.sensors.filesystem import FileSensor
from airflow.sdk.exceptions import AirflowSensorTimeout, TaskDeferred

from loopline.config import load_config
from loopline.orchestration.sensors import PublishedFileSensor, landing_sensor, published_sensor


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


# -- which sensor a URI gets ---------------------------------------------------------------------------------

POINTER_KEY = "features/ds={{ ds }}/_CURRENT"


@pytest.mark.parametrize("lake_uri", ["s3://bucket/lake", "s3a://bucket/lake", "s3a://bucket/lake/"])
def test_an_object_store_lake_gets_an_s3_key_sensor_on_the_s3_key(lake_uri):
    cfg = load_config(environ={"LOOPLINE__STORAGE__LAKE_URI": lake_uri})
    sensor = published_sensor(cfg, "features", "wait_for_features")
    assert isinstance(sensor, S3KeySensor)
    assert not isinstance(sensor, FileSensor)
    assert sensor.bucket_key == f"s3://bucket/lake/{POINTER_KEY}"  # the only scheme S3KeySensor parses
    assert sensor.aws_conn_id == cfg.storage.aws_conn_id
    assert sensor.marker_path == sensor.bucket_key


@pytest.mark.parametrize("landing_uri", ["s3://bucket/landing", "s3a://bucket/landing"])
def test_an_object_store_landing_gets_an_s3_key_sensor(landing_uri):
    sensor = landing_sensor(load_config(environ={"LOOPLINE__STORAGE__LANDING_URI": landing_uri}))
    assert isinstance(sensor, S3KeySensor)
    assert sensor.bucket_key == [
        f"s3://bucket/landing/{k}/ds={{{{ ds }}}}/_SUCCESS" for k in ("transactions", "labels")
    ]


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_a_local_lake_gets_a_file_sensor_on_the_path(tmp_path, scheme):
    cfg = load_config(environ={"LOOPLINE__STORAGE__LAKE_URI": f"{scheme}{tmp_path}/lake"})
    sensor = published_sensor(cfg, "features", "wait_for_features")
    assert isinstance(sensor, PublishedFileSensor)
    assert not isinstance(sensor, S3KeySensor)
    assert sensor.filepath == f"{tmp_path}/lake/{POINTER_KEY}"  # a path: FileSensor does not parse file://


def test_a_relative_lake_is_a_folder_under_home():
    from loopline.config import loopline_home

    sensor = published_sensor(load_config(environ={}), "features", "wait_for_features")
    assert isinstance(sensor, PublishedFileSensor)
    assert sensor.filepath == f"{loopline_home()}/lake/{POINTER_KEY}"


def test_a_file_uri_landing_gets_file_sensors_on_paths(tmp_path, monkeypatch):
    sensor = _local_sensor(tmp_path, monkeypatch)
    uri_sensor = landing_sensor(load_config(environ={"LOOPLINE__STORAGE__LANDING_URI": f"file://{tmp_path}"}))
    assert isinstance(uri_sensor, FileSensor)
    assert [m.replace("{{ ds }}", "2026-01-05") for m in uri_sensor.markers] == sensor.markers
